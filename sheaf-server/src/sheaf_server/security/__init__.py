"""Who may call what: API keys with scopes (`keys`), their check at the edge of every host
(`middleware`), and per-key and per-model rate limits (`limits`). docs/security.md."""
