"""The three floors hold: the core imports (and trains) without transformers, and the library
never imports the apps."""

import ast
import os
import subprocess
import sys
import textwrap

ROOT = os.path.join(os.path.dirname(__file__), "..", "unified_rl")
CORE = ["rollout.py", "protocols.py", "engine.py", "batching.py", "lm_head.py", "precision.py", "threads.py", "names.py", "distributed.py", "coefficients"]
CORE_DEPENDENCIES = {"torch", "numpy", "jaxtyping", "einops"}


def _modules(entry):
    path = os.path.join(ROOT, entry)
    if os.path.isdir(path):
        return [os.path.join(path, f) for f in sorted(os.listdir(path)) if f.endswith(".py")]
    return [path]


def _imports(path):
    """(module, level) of every import statement in a file."""
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((a.name, 0) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", node.level


def test_core_imports_only_torch_numpy_jaxtyping_einops_and_itself():
    stdlib = set(sys.stdlib_module_names)
    for entry in CORE:
        for path in _modules(entry):
            for module, level in _imports(path):
                top = module.split(".")[0]
                if level:  # relative: must stay inside the core (from the top of the package, or within coefficients/)
                    in_coefficients = os.path.basename(os.path.dirname(path)) == "coefficients"
                    package_level = 2 if in_coefficients else 1
                    if level == package_level:
                        assert top in {e.removesuffix(".py") for e in CORE}, f"{path} imports {'.' * level}{module}"
                    else:
                        assert in_coefficients and level == 1, f"{path} imports {'.' * level}{module}"
                else:
                    assert top in CORE_DEPENDENCIES or top in stdlib, f"{path} imports {module}"


def test_core_imports_and_trains_with_transformers_blocked():
    """A plain torch language model trained through engine.backward, with transformers unimportable."""
    code = textwrap.dedent("""
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "transformers":
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
        sys.meta_path.insert(0, Block())
        import torch
        import unified_rl as url
        import unified_rl.coefficients as C
        assert "transformers" not in sys.modules and not hasattr(url, "hf")

        class TinyLM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb, self.out = torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11)
            def forward(self, input_ids, attention_mask=None, position_ids=None):
                return self.out(torch.tanh(self.emb(input_ids).cumsum(1)))

        torch.manual_seed(0)
        model = TinyLM().double()
        ids = torch.randint(0, 11, (4, 6))
        comp = torch.zeros(4, 6, dtype=torch.bool); comp[:, 3:] = True
        r = url.Rollout(ids, torch.ones(4, 6, dtype=torch.bool), comp, group_ids=torch.tensor([0, 0, 1, 1]),
                        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64))
        r = r.replace(old_logprobs=url.engine.logprobs(model, r).double())
        coef = C.chain(C.group_normalized(), C.ppo_clip(0.2), aggregation=C.sequence_mean())
        stats = url.engine.backward(model, coef.prepare(r), coef, url.ExecutionPlan(max_tokens=12))
        assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
        assert type(url.engine.adapter_for(model)).__name__ == "PlainAdapter"
        assert "transformers" not in sys.modules
        print("core ok", stats.metrics["tokens"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "core ok 12.0" in out.stdout


def test_the_library_never_imports_the_apps():
    for folder, _, files in os.walk(ROOT):
        if os.path.join("unified_rl", "apps") in folder:
            continue
        for f in files:
            if f.endswith(".py"):
                for module, level in _imports(os.path.join(folder, f)):
                    assert "apps" not in module.split("."), f"{folder}/{f} imports {module}"


def test_only_hf_imports_transformers():
    for folder, _, files in os.walk(ROOT):
        if folder.rstrip("/").endswith(os.path.join("unified_rl", "hf")) or os.path.join("unified_rl", "apps") in folder:
            continue
        for f in files:
            if f.endswith(".py"):
                for module, _ in _imports(os.path.join(folder, f)):
                    assert module.split(".")[0] not in ("transformers", "tokenizers"), f"{folder}/{f} imports {module}"
