"""PFDM and FedAvg diffusion as a Flower app (Flower 1.41, Message API).

    pyproject.toml   the app's knobs ([tool.flwr.app.config]) and components
    task.py          thin adapter over pfdm_core: config, data, models, the steps of each side
    client_app.py    ClientApp: query.upload (privatize once), train.personal, train / evaluate (FedAvg)
    server_app.py    ServerApp: PFDM (upload -> shared -> personal -> metrics) or Flower's FedAvg
    local.py         a SuperLink and SuperNodes on 127.0.0.1 (subprocesses) for tests and notebook 09

The algorithms live in pfdm_core (methods, privacy, core, experiment); these files
only move tensors between Flower messages and those functions. See README.md beside this file.
"""
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent  # the folder `flwr run` / `flwr build` takes
