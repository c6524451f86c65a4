# %% [markdown]
# # Castle from Python
# A lab rebirth, its timing report, and a look at the pieces. Run it as a script or
# cell by cell; set CASTLE_EXAMPLE_CONFIG to use another castle.toml.

# %%
import os
import pathlib

import castle

config_path = os.environ.get("CASTLE_EXAMPLE_CONFIG", str(pathlib.Path(__file__).parent / "lab" / "castle.toml"))
cfg = castle.Config.load(config_path)
cluster = castle.Castle(cfg)
print(cfg, cluster.steps())

# %% Watch the steps go by.
started = []
report = cluster.create(on_event=lambda e: started.append(e["step"]) if e["event"] == "step_started" else None)
print(report.table())
print("critical path:", " -> ".join(report.critical_path))

# %% The pieces work alone: a Talos bundle whose keys never print.
secrets = castle.talos.generate_secrets()
print(secrets)

# %% And the cluster goes away again.
cluster.destroy()
print(cluster.status()["nothing_left"])
