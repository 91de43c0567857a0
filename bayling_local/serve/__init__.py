"""`bayling-local serve`: an OpenAI-compatible HTTP server over the engine (FastAPI, uvicorn, SSE).

One module per concern: `app` (routes), `schemas` (request models, response objects), `generation`
(requests to prompt ids and settings), `streaming` (handles to SSE), `translation` (`/v1/translate`),
`auth` (bearer key), `limits` (body size, bounded queue), `errors` (OpenAI error objects), `state`
(the loaded model), `server` (uvicorn). `backends/remote.py` is the client side.
"""
