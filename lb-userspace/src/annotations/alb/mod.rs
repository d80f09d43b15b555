//! ALB annotations on Ingresses (`alb.ingress.kubernetes.io/*`), AlbConfig and IngressClass.
