"""fakeface serve: a local web page and JSON API that check photos (FastAPI + uvicorn)."""
