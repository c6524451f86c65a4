# %% [markdown]
# # Castle from Python
# A lab rebirth with its timing report, a look at the pieces, and the way back to
# nothing. Run it as a script or cell by cell (VS Code, Jupytext); set
# CASTLE_EXAMPLE_CONFIG to use another castle.toml.

# %%
import collections
import os
import pathlib

import castle

config_path = os.environ.get("CASTLE_EXAMPLE_CONFIG", str(pathlib.Path(__file__).parent / "lab" / "castle.toml"))
cfg = castle.Config.load(config_path)
cluster = castle.Castle(cfg)
print(cluster.summary())
print("steps:", ", ".join(cluster.steps()))

# %% [markdown]
# Watch the rebirth: the callback gets every event as a dict, on this thread.

# %%
seen: collections.Counter[str] = collections.Counter()
report = cluster.create(on_event=lambda e: seen.update([e["event"]]))
print(dict(seen))
print(report.table())
print("critical path:", " -> ".join(report.critical_path))

# %% [markdown]
# The pieces work alone. Secrets print redacted; `reveal…()` is the only way in.

# %%
bundle = castle.talos.generate_secrets()
node = castle.talos.machine_config(bundle, cfg.name, "https://192.168.1.210:6443", "cp-1", "controlplane", "192.168.1.211/24", "192.168.1.1")
print(bundle, node, sep="\n")

# %% [markdown]
# And the cluster goes away again.

# %%
gone = cluster.destroy()
print(f"destroyed in {gone.makespan_ms} ms; nothing left: {cluster.status()['nothing_left']}")
