"""The UI's pages, one module per family; each exposes ``router`` (a FastAPI APIRouter)."""
