"""The software-defined assets, by family: `sources`, `batches`, `results`, `samples`, `publishing`.

Wiring only: the logic lives in plain modules (`core/`, `publish/`) that tests call directly.
`cotgen_assets.definitions` gathers them.
"""
