"""The three floors hold: the core imports (and trains) without transformers, and the library
never imports the apps."""

import ast
import os
import subprocess
import sys
import textwrap

ROOT = os.path.join(os.path.dirname(__file__), "..", "unified_rl")
CORE = ["rollout.py", "protocols.py", "engine.py", "batching.py", "lm_head.py", "precision.py", "threads.py", "names.py", "distributed.py", "critic.py",
        "schedules.py", "vocabulary_pass.py",
        "coefficients"]
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


BLOCKER = """
import importlib.abc, sys
BLOCKED = {blocked!r}
TRIED = []
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            TRIED.append(name)  # recorded even when the importer catches the error: dynamic imports are seen too
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)")
sys.meta_path.insert(0, Block())
"""


def _blocked_run(blocked, body):
    """Run ``body`` in a fresh interpreter where importing any of ``blocked`` fails (and is recorded);
    the run fails if anything tried."""
    code = BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(body) + "\nassert not TRIED, f'tried to import {TRIED}'\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=os.path.join(ROOT, ".."))
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_core_and_methods_import_and_train_with_upper_floors_blocked():
    """A plain torch language model trained through engine.backward with every registered method
    built, while transformers and the hf and apps floors cannot be imported, not even dynamically."""
    stdout = _blocked_run(("transformers", "tokenizers", "peft", "unified_rl.hf", "unified_rl.apps"), """
        import torch
        import unified_rl as url
        import unified_rl.coefficients as C
        from unified_rl import data, methods, rewards  # the library built on the protocols

        class TinyLM(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb, self.out = torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11)
            def forward(self, input_ids, attention_mask=None, position_ids=None):
                return self.out(torch.tanh(self.emb(input_ids).cumsum(1)))

        built = {name: methods.build(name, max_new_tokens=48) for name in methods.REGISTRY}
        assert isinstance(built["grpo"], url.Method)
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
        try:  # PPO on a policy no registered builder knows: one clear line
            built["ppo"].critic.build(model)
            raise AssertionError("a value model was built for a plain module")
        except ValueError as e:
            assert "pass value_model=" in str(e), e
        print("core ok", stats.metrics["tokens"])
    """)
    assert "core ok 12.0" in stdout


def test_the_library_never_imports_the_apps_even_dynamically():
    """Every library module imports, and a Trainer trains a step, while ``unified_rl.apps`` cannot be imported."""
    _blocked_run(("unified_rl.apps",), """
        import importlib, os
        for folder, _, files in os.walk("unified_rl"):
            for f in sorted(files):
                name = os.path.join(folder, f)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                if f.endswith(".py") and not name.startswith(("unified_rl.apps", "unified_rl.hf.vllm")):
                    importlib.import_module(name)
        import torch
        import unified_rl as url
        from unified_rl.config import TrainConfig
        from unified_rl.hf import tiny_llama
        from unified_rl.loop import Trainer
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        chars = "0123456789+-*=# "
        raw = Tokenizer(models.WordLevel({c: i + 3 for i, c in enumerate(chars)} | {"<pad>": 0, "</s>": 1, "<unk>": 2}, unk_token="<unk>"))
        raw.pre_tokenizer = pre_tokenizers.Split("", "isolated")
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
        rows = [{"prompt": f"{a}+{b}=", "completion": f"{a + b}"} for a in range(4) for b in range(4)]
        trainer = Trainer(tiny_llama(len(tok), hidden=16, layers=1, heads=2, intermediate=32), tok, url.methods.sft(), rows,
                          TrainConfig(steps=1, questions_per_step=4))
        trainer.run(progress=False)
        assert trainer.step_count == 1
    """)


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


def _import_graph() -> dict:
    """Module -> the package modules it imports anywhere in its file (function-level imports too)."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(ROOT) for f in fs if f.endswith(".py")]
    name_of = {p: os.path.relpath(p, os.path.join(ROOT, ".."))[:-3].replace(os.sep, ".").removesuffix(".__init__") for p in files}
    modules = set(name_of.values())
    graph = {}
    for path, module in name_of.items():
        package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for n in names:
                while n and n not in modules:
                    n = n.rpartition(".")[0]
                if n and n != module:
                    targets.add(n)
        graph[module] = targets
    return graph


def test_no_import_cycle():
    """No two modules of the package import each other, directly or round a loop (imports inside
    functions count: a lazy import only hides a cycle)."""
    graph, order, low, stack, cycles = _import_graph(), {}, {}, [], []

    def visit(v):  # Tarjan's strongly connected components
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in graph[v]:
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            part = []
            while not part or part[-1] != v:
                part.append(stack.pop())
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in sorted(graph):
        if v not in order:
            visit(v)
    assert len(graph) > 50 and "unified_rl.data.row" in graph["unified_rl.data.chat"]
    assert cycles == []
