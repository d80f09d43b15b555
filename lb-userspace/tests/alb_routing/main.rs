//! ALB rules end to end through the route model and the proxy's matching functions: the
//! rule semantics and a property test over every key (the reference's golden examples are
//! data files, run by the `golden` test).
mod fuzz;
mod rules;
mod support;
