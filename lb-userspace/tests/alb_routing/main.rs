//! ALB annotations end to end through the route model and the proxy's matching functions:
//! the reference's golden examples and the rule semantics.
mod fuzz;
mod rules;
mod support;
