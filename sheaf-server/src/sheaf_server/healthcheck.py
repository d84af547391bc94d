"""`python -m sheaf_server.healthcheck [PATH]`: exit 0 when the server in this container
answers PATH (default /health) with 200, else 1 — the image's HEALTHCHECK, with no curl
in the image. The port is $SAGEMAKER_BIND_TO_PORT or $PORT (default 8000); with
$SHEAF_HEALTHCHECK_TLS set, it speaks HTTPS to itself (certificate not checked: it is this
container's own server, reached on 127.0.0.1); with $SHEAF_API_KEY set, it sends that key
(for a server whose `server.auth.open_paths` leave PATH protected)."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[0] if argv else "/health"
    port = os.environ.get("SAGEMAKER_BIND_TO_PORT") or os.environ.get("PORT", "8000")
    tls = bool(os.environ.get("SHEAF_HEALTHCHECK_TLS"))
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}"
    context = ssl._create_unverified_context() if tls else None
    key = os.environ.get("SHEAF_API_KEY")
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key
                                     else {})
    try:
        with urllib.request.urlopen(request, timeout=4, context=context) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
