//! CLB annotations on Services (`service.beta.kubernetes.io/alibaba-cloud-loadbalancer-*`).
