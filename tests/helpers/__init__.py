"""Test helpers: a fake OpenAI-compatible upstream and an in-thread uvicorn server."""
