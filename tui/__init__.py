"""The Textual app for offline chat, translation, benchmarks and the model store (`bayling-local tui`).

Installed as `bayling_local.tui`. `app.py` holds `BaylingApp`; `screens/` one module per screen (and
the dialogs); `widgets/` the pieces they share; `history.py` the SQLite conversation store.
"""
