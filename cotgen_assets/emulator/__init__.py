"""A local Gemini Batch API emulator (`cotgen-emulator`), for offline runs and tests.

`server` is the HTTP front and CLI, `store` the state on disk, `responder` what the model
answers, `faults` what goes wrong on purpose, `vertex` the Vertex AI batch prediction endpoints.
"""
