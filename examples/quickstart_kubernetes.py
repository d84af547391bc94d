"""Tier 2 on Kubernetes, from Python: a single-node Ray head and Ray Serve in each pod
(dynamic batching, hot swap, the whole Sheaf feature set), the pods scaled by a
HorizontalPodAutoscaler — no KubeRay needed.

    python examples/quickstart_kubernetes.py --image registry.example.com/sheaf:0.1.0 -o k8s

writes the manifests into k8s/ and prints the commands that build the image and apply
them. The same from the shell: `sheaf-server build sheaf.yaml --target kubernetes
--runtime ray -o k8s`.
"""

from __future__ import annotations

import argparse

from sheaf_core import ModelSpec
from sheaf_server.deploy import KubernetesServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="registry.example.com/sheaf:0.1.0")
    parser.add_argument("-o", "--output", default="k8s")
    args = parser.parse_args()

    models = [
        ModelSpec(name="baseline", backend="baseline"),
        ModelSpec(name="forecaster", backend="chronos",
                  backend_kwargs={"model_id": "amazon/chronos-bolt-tiny"},
                  batching={"max_batch_size": 64, "max_wait_ms": 5},
                  resources={"num_cpus": 2, "memory": 4 * 2**30}),
    ]
    server = KubernetesServer(models, image=args.image, runtime="ray", max_replicas=8)
    for manifest in server.manifests():
        print(f"{manifest['kind']:<24} {manifest['metadata']['name']}")
    written = server.write(args.output, force=True)
    print(f"\nwrote {len(written)} files into {args.output}/. Next:")
    print(f"  sheaf-server build sheaf.yaml --target docker --runtime ray -o image && "
          f"docker build -t {args.image} image && docker push {args.image}")
    print(f"  kubectl apply -f {args.output}/")
    print("  kubectl rollout status deployment/sheaf && kubectl port-forward svc/sheaf 8000:80")


if __name__ == "__main__":
    main()
