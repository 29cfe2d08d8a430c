"""Batch backends: each owns one batch API's words (`developer`, `vertex`, over `gemini_wire`);
`base` says what a backend is, `lifecycle` what every backend shares (retries, never paying twice,
sending and adopting submissions), `registry` which exist, `resource` the Dagster adapter."""

from cotgen_assets.backends import registry  # noqa: F401 - the built-in backends register on any import of one
