"""Deployment targets generated from a sheaf config (`sheaf-server build --target ...`):
container images, Compose, Kubernetes, SageMaker, Ray Serve and KubeRay — so that what is
deployed is the config that was validated and tested."""

from sheaf_server.deploy.kubernetes import KubernetesServer

__all__ = ["KubernetesServer"]
