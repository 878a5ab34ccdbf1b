"""Workflow paths and experiment lists of every branch, in one place.

``workflow/rules/*.smk`` hold only rules; every file list, input function, per-job params
(only what changes a job's output) and resource lookup they use comes from one :class:`Plan`
built from the typed :class:`matfuse.config.Config`. The crystal branch (ingest -> text ->
embeddings/graphs -> train -> predict), the charge-density (ECD) branch and CroMEL share the
path templates below, and ``rule all`` is :meth:`Plan.final_targets`.

Cross-references between config sections are checked by the typed config itself
(:class:`matfuse.config.Config` validators); :meth:`Plan.check_at_start` adds the checks that
need the machine (is each text encoder available offline?).
"""

from __future__ import annotations

import re
from typing import Any

from matfuse.config import GRAPH_MODELS, LATER_HYPER_KEYS, TEXT_MODELS, TOKEN_MODELS, Config, ModelHyper, RuleResources
from matfuse.density.config import match_file

NONE = "none"
#: One experiment's path below results/models, results/predictions, logs/train, ...
EXP = "{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}seed{seed}"
#: A seed ensemble of one experiment (mean and std over its seeds).
ENSEMBLE = "{dataset}/{target}/{model}/{encoder}/{variant}/{fold}{size}ensemble"
#: One matbench results file: one model over all folds (and seeds).
MATBENCH_EXP = "{dataset}/{target}/{model}/{encoder}/{variant}"
#: ``{dataset}-ecd_{kind}``: an ECD dataset in result paths and in metrics.csv.
ECD = "{dataset}-ecd_{kind}"
ECD_EXP = ECD + "/{target}/{model}/{encoder}/{variant}/seed{seed}"
#: Keys of one experiment in results/experiments.json (the metrics.csv columns that name it).
EXPERIMENT_KEYS = ("dataset", "train_dataset", "target", "model", "text_encoder", "text_variant", "fold", "n_train", "seed", "kind")
#: TrainingConfig settings added after results existed: left out of the params at their defaults.
LATER_TRAINING_KEYS = ("optimizer", "momentum", "milestones", "gamma", "lr_by_target")
#: TrainingConfig fields that list the experiments (wildcards of each job), not how one is trained.
EXPERIMENT_LISTS = {"models", "targets", "datasets", "encoders", "text_variants", "seeds", "train_sizes", "extra"}


def size_segment(n_train: int | str | None) -> str:
    """The ``{size}`` wildcard of a training-set size: "" for the whole training split, else ``n<N>-``."""
    return "" if n_train in (None, "all") else f"n{int(n_train)}-"


def size_of(segment: str) -> int | None:
    """Inverse of :func:`size_segment`."""
    return int(segment[1:-1]) if segment else None


def fold_segment(fold: int | None) -> str:
    """The ``{fold}`` wildcard of a k-fold split's fold: "" for a single split, else ``fold<k>-``."""
    return "" if fold is None else f"fold{int(fold)}-"


def fold_of(segment: str) -> int | None:
    """Inverse of :func:`fold_segment`."""
    return int(segment[4:-1]) if segment else None


class Plan:
    """Everything the rules need to know about the configured experiments (see module docstring)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.datasets = list(cfg.datasets)
        self.train_datasets = cfg.train_datasets()
        self.shards = list(range(cfg.text.n_shards))
        self.density = cfg.density

    # ------------------------------------------------------------------ crystal branch
    def experiments(self) -> list[dict[str, Any]]:
        """Every (dataset, target, model, encoder, variant, seed) the training section asks for."""
        default = [n for n, d in self.cfg.datasets.items() if d.train]
        out, seen = [], set()
        for g in self.cfg.training.products():
            for ds in g["datasets"] if g["datasets"] is not None else default:
                for target in g["targets"]:
                    for model in g["models"]:
                        texts = ([(e, v) for e in g["encoders"] for v in g["text_variants"]]
                                 if model in TEXT_MODELS else [(NONE, NONE)])
                        for enc, var in texts:
                            for fold in self.cfg.split.folds():
                                for n in g["train_sizes"]:
                                    for seed in g["seeds"]:
                                        e = dict(dataset=ds, target=target, model=model, encoder=enc, variant=var,
                                                 fold=fold_segment(fold), size=size_segment(n), seed=seed)
                                        key = tuple(e.values())
                                        if key not in seen:
                                            seen.add(key)
                                            out.append(e)
        return out

    def zeroshot_sets(self, train_dataset: str, target: str) -> list[str]:
        """Evaluation datasets that score models of ``train_dataset`` and provide ``target`` (sorted)."""
        return sorted(
            ev for ev, tr in self.cfg.evaluation.zero_shot.items()
            if tr == train_dataset and target in self.cfg.datasets[ev].target_names()
        )

    def embedding_file(self, dataset: str, encoder: str, variant: str) -> str:
        return f"results/embeddings/{dataset}/{encoder}/{variant}-{self.cfg.embeddings[encoder].pooling}.parquet"

    def model_inputs(self, wildcards: Any, dataset: str | None = None) -> dict[str, str]:
        """Inputs of train/predict for one experiment (graphs and/or embeddings as the model needs)."""
        ds = dataset or wildcards.dataset
        inputs = {"entries": f"results/data/{ds}/entries.parquet"}
        if wildcards.model in GRAPH_MODELS:
            inputs["graphs"] = f"results/graphs/{ds}/graphs.parquet"
        if wildcards.model in TOKEN_MODELS:
            inputs["texts"] = f"results/text/{ds}/texts.parquet"
        elif wildcards.model in TEXT_MODELS:
            inputs["embeddings"] = self.embedding_file(ds, wildcards.encoder, wildcards.variant)
        return inputs

    def zeroshot_inputs(self, wildcards: Any) -> dict[str, str]:
        inputs = {}
        for ev in self.zeroshot_sets(wildcards.dataset, wildcards.target):
            for kind, path in self.model_inputs(wildcards, dataset=ev).items():
                inputs[f"{ev}__{kind}"] = path
        return inputs

    def prediction_files(self) -> list[str]:
        exps = self.experiments()
        files = [f"results/predictions/{EXP}.parquet".format(**e) for e in exps]
        files += [f"results/predictions/zeroshot/{EXP}.parquet".format(**e) for e in exps
                  if self.zeroshot_sets(e["dataset"], e["target"])]
        return files

    def _prediction_files_of(self, wildcards: Any, keys: tuple[str, ...], **fixed: str) -> list[str]:
        """Prediction files of the experiments that match ``wildcards`` on ``keys`` (and ``fixed``)."""
        want = {**{k: getattr(wildcards, k) for k in keys}, **fixed}
        return [f"results/predictions/{EXP}.parquet".format(**e) for e in self.experiments()
                if all(e[k] == v for k, v in want.items())]

    def seed_files(self, wildcards: Any) -> list[str]:
        """The per-seed prediction files of one experiment (every configured seed), for its ensemble."""
        return self._prediction_files_of(wildcards, ("dataset", "target", "model", "encoder", "variant", "fold", "size"))

    def ensemble_files(self) -> list[str]:
        """``...{fold}{size}ensemble.parquet`` of every experiment trained with two or more seeds."""
        groups: dict[str, int] = {}
        for e in self.experiments():
            path = f"results/predictions/{ENSEMBLE}.parquet".format(**e)
            groups[path] = groups.get(path, 0) + 1
        return sorted(p for p, n in groups.items() if n >= 2)

    def matbench_records(self) -> list[str]:
        """One matbench results file per model of each matbench dataset (full training size)."""
        out = set()
        for e in self.experiments():
            mb = self.cfg.evaluation.matbench.get(e["dataset"])
            if mb is not None and e["target"] == mb.target and not e["size"]:
                out.add(f"results/matbench/{MATBENCH_EXP}/results.json.gz".format(**e))
        return sorted(out)

    def matbench_prediction_files(self, wildcards: Any) -> list[str]:
        """Every fold's and seed's prediction files of one matbench record (fold-major)."""
        return self._prediction_files_of(wildcards, ("dataset", "target", "model", "encoder", "variant"), size="")

    def matbench_summaries(self) -> list[str]:
        return sorted({f"results/matbench/{ds}/summary.md" for ds in self.cfg.evaluation.matbench
                       if any(r.startswith(f"results/matbench/{ds}/") for r in self.matbench_records())})

    def parity_plots(self) -> list[str]:
        if not self.cfg.evaluation.parity_plots:
            return []
        return sorted({"results/plots/parity/{dataset}/{target}/{model}.png".format(**e)
                       for e in self.experiments() if not e["size"]})

    def reject_files(self) -> list[str]:
        """Every crystal-branch stage's rejects table, for the summary in results/rejects.csv."""
        exps = self.experiments()
        models = {e["model"] for e in exps} or set(self.cfg.training.models)
        pairs = sorted({(e["encoder"], e["variant"]) for e in exps
                        if e["encoder"] != NONE and e["model"] not in TOKEN_MODELS})
        files = []
        for ds in self.datasets:
            files.append(f"results/data/{ds}/rejects.parquet")
            if models & TEXT_MODELS:
                files.append(f"results/text/{ds}/rejects.parquet")
                files += [self.embedding_file(ds, e, v).replace(".parquet", ".rejects.parquet") for e, v in pairs]
            if models & GRAPH_MODELS:
                files.append(f"results/graphs/{ds}/rejects.parquet")
        return files

    def jarvis_stores(self) -> dict[str, tuple[str, str]]:
        """JARVIS figshare zips packed from local record files: {zip path: (records file, JARVIS dataset)}."""
        from matfuse.sources.jarvis import store_zip_path

        return {
            str(store_zip_path(ds.source.store_dir, ds.source.dataset)): (ds.source.local_subset, ds.source.dataset)
            for ds in self.cfg.datasets.values()
            if ds.source.kind == "jarvis" and ds.source.local_subset
        }

    def store_zip_pattern(self) -> str:
        return "|".join(re.escape(p) for p in self.jarvis_stores()) or "(?!x)x"

    def ingest_inputs(self, wildcards: Any) -> dict[str, str]:
        """The source's local files, so that a changed table or store re-runs the ingest."""
        from matfuse.sources.jarvis import store_zip_path

        ds = self.cfg.datasets[wildcards.dataset]
        src = ds.source
        if ds.hull is not None:
            return {"table": src.path, "hull": self.hull_file(wildcards.dataset)}
        if src.kind == "jarvis" and src.local_subset:
            return {"store": str(store_zip_path(src.store_dir, src.dataset))}
        if src.kind == "table":
            return {"table": src.path}
        return {}

    def split_inputs(self, wildcards: Any) -> dict[str, str]:
        """Entries, and for split kind column the source files (re-read for the column), for kind file the file."""
        inputs = {"entries": f"results/data/{wildcards.dataset}/entries.parquet"}
        split = self.cfg.split
        if split.kind == "column":
            inputs.update({f"source_{k}": v for k, v in self.ingest_inputs(wildcards).items() if k != "hull"})
        elif split.kind == "file":
            inputs["split_file"] = str(split.path)
        return inputs

    def split_params(self, wildcards: Any) -> dict[str, Any]:
        """The split rule's params: :meth:`SplitConfig.params` (+ the dataset's config for kind column)."""
        params = self.cfg.split.params()
        if self.cfg.split.kind == "column":
            params["dataset"] = self.cfg.datasets[wildcards.dataset].model_dump()
        return params

    def descriptions_params(self, wildcards: Any) -> dict[str, Any] | None:
        """The dataset's precomputed descriptions (merge_texts), or None."""
        d = self.cfg.datasets[wildcards.dataset].descriptions
        return None if d is None else d.model_dump()

    def descriptions_inputs(self, wildcards: Any) -> dict[str, str]:
        """A precomputed-descriptions table is an input of merge_texts (a changed table re-merges)."""
        d = self.cfg.datasets[wildcards.dataset].descriptions
        return {"descriptions": d.path} if d is not None and d.kind == "table" else {}

    def hull_file(self, dataset: str) -> str:
        return f"results/hull/{dataset}/e_above_hull.parquet"

    def hull_checks(self) -> list[str]:
        """The hull checks of every dataset with a hull target (rule all builds them)."""
        return [f"results/hull/{ds}/check.json" for ds, d in self.cfg.datasets.items() if d.hull is not None]

    def hull_params(self, wildcards: Any) -> dict[str, Any]:
        d = self.cfg.datasets[wildcards.dataset]
        return {"source": d.source.model_dump(), "hull": d.hull.model_dump()}

    def cromel_files(self) -> list[str]:
        c = self.cfg.cromel
        return [] if c is None else [f"results/cromel/{c.dataset}/seed{s}/metrics.csv" for s in c.seeds]

    # ------------------------------------------------------------------ generation branch (FlowLLM)
    #: Samples of these methods come from integrating a flow (their RFM base).
    GEN_FLOW_BASE = {"flowllm": "lm", "rfm_simple": "simple"}

    def generation_targets(self) -> list[str]:
        """What the generation branch ends in (none without a ``generation`` section)."""
        if self.cfg.generation is None:
            return []
        return ["results/generation/metrics.csv", "results/generation/table.md"]

    def generation_methods(self) -> list[str]:
        return list(self.cfg.generation.methods) if self.cfg.generation is not None else []

    def generation_inputs(self, wildcards: Any = None) -> dict[str, str]:
        """The split of the generation dataset (entries and splits.json)."""
        ds = self.cfg.generation.dataset
        return {"entries": f"results/data/{ds}/entries.parquet", "splits": f"results/splits/{ds}/splits.json"}

    def generation_params(self, stage: str) -> dict[str, Any]:
        """What changes a generation stage's output (the sections it reads), for the rule's params."""
        g = self.cfg.generation
        keep = {
            "data": {"dataset", "max_sites"},
            "train_lm": {"max_sites", "seed", "lm", "device"},
            "sample_lm": {"max_sites", "seed", "n_samples", "sampling", "device"},
            "pairs": {"max_sites", "seed", "sampling", "rfm", "device"},
            "train_rfm": {"seed", "rfm", "device"},
            "integrate": {"seed", "rfm", "sampling", "device"},
            "pyxtal": {"seed", "n_samples", "pyxtal_max_groups"},
            "test": {"seed", "n_samples"},
            "calibration": {"seed", "calibration", "n_calibration"},
            "evaluate": {"evaluation"},
        }[stage]
        out = g.model_dump(include=keep | {"dataset"})
        if stage == "pairs":  # only the pair settings of the RFM section change the pairs
            out["rfm"] = {k: out["rfm"][k] for k in ("n_pair_targets", "samples_per_target", "pair_sampling")}
        if stage == "train_rfm":
            out["rfm"] = {k: v for k, v in out["rfm"].items() if k != "steps"}
        if stage == "integrate":
            out["rfm"] = {"steps": out["rfm"]["steps"]}
            out["sampling"] = {"batch_size": out["sampling"]["batch_size"]}
        return out

    #: Methods whose samples exist only after the LM (and RFM): their CHGNet reference energies are
    #: computed in parallel shards before they are evaluated. The other rows (test, pyxtal,
    #: calibration) are evaluated while the LM trains and fill the same cache themselves.
    GEN_LATE = ("lm", "flowllm", "rfm_simple")

    def generation_reference_inputs(self, wildcards: Any = None) -> dict[str, str]:
        """The LM-derived samples files whose chemical systems need CHGNet reference energies (+ training table)."""
        g = self.cfg.generation
        out = {f"samples_{m}": f"results/generation/samples/{m}.parquet" for m in g.methods if m in self.GEN_LATE}
        out["train"] = "results/generation/data/train.parquet"
        return out

    def generation_reference_files(self, wildcards: Any = None) -> list[str]:
        """The reference shards an evaluation waits for (none for the rows that exist before the LM)."""
        if wildcards is not None and getattr(wildcards, "method", None) not in self.GEN_LATE:
            return []
        if not set(self.cfg.generation.methods) & set(self.GEN_LATE):
            return []
        return [f"results/generation/references/shard{k}.json" for k in range(self.cfg.generation.reference_shards)]

    def generation_eval_files(self, wildcards: Any = None) -> dict[str, str]:
        """Inputs of the table: each method's summary and per-sample table, the stage summaries, calibration."""
        g = self.cfg.generation
        out: dict[str, str] = {}
        for m in g.methods:
            out[f"summary_{m}"] = f"results/generation/eval/{m}/summary.json"
            out[f"samples_{m}"] = f"results/generation/eval/{m}/samples.parquet"
        methods = set(g.methods)
        stages = {}
        if methods & {"lm", "flowllm", "rfm_simple"}:
            stages.update(stage_train_lm="results/generation/lm/summary.json",
                          stage_sample_lm="results/generation/samples/lm_summary.json")
        if methods & {"flowllm", "rfm_simple"}:
            stages["stage_pairs"] = "results/generation/pairs/summary.json"
        for m, base in self.GEN_FLOW_BASE.items():
            if m in methods:
                stages[f"stage_train_rfm_{base}"] = f"results/generation/rfm/{base}/summary.json"
                stages[f"stage_integrate_{m}"] = f"results/generation/samples/{m}_summary.json"
        out.update(stages)
        if g.calibration is not None:
            out["calibration"] = "results/generation/eval/calibration/summary.json"
        return out

    def mp_key_vars(self) -> list[str]:
        """Environment variables holding MP API keys that jobs need (never written anywhere)."""
        names = {ds.source.api_key_env for ds in self.cfg.datasets.values() if ds.source.kind == "mp"}
        names |= {ds.descriptions.api_key_env for ds in self.cfg.datasets.values()
                  if ds.descriptions is not None and ds.descriptions.kind == "mp"}
        if self.density is not None:
            names |= {s.api_key_env for s in self.density.datasets.values() if s.kind == "mp"}
        return sorted(names)

    # ------------------------------------------------------------------ density branch
    def density_experiments(self) -> list[dict[str, Any]]:
        """Every (dataset, kind, target, model, encoder, variant, seed) the density section asks for."""
        d = self.density
        if d is None:
            return []
        out = []
        for ds in d.datasets:
            for kind in d.kinds:
                for target in d.train_targets():
                    for model in d.models:
                        texts = [(e, v) for e in d.encoders for v in d.text_variants] if model in TEXT_MODELS else [(NONE, NONE)]
                        for enc, var in texts:
                            for seed in d.seeds:
                                out.append(dict(dataset=ds, kind=kind, target=target, model=model, encoder=enc, variant=var, seed=seed))
        return out

    def match_datasets(self) -> list[str]:
        return list(self.density.match) if self.density is not None else []

    def density_prediction_files(self) -> list[str]:
        return [f"results/predictions/{ECD_EXP}.parquet".format(**e) for e in self.density_experiments()]

    def density_reject_files(self) -> list[str]:
        """Rejects of matching, selection and regrid/slice (second path segment = the dataset name)."""
        d = self.density
        if d is None:
            return []
        files = [match_file(ds, "rejects.parquet") for ds in d.match]
        for ds in d.datasets:
            files.append(f"results/density/{ds}/selection_rejects.parquet")
            files += [f"results/density/{ECD}/rejects.parquet".format(dataset=ds, kind=k) for k in d.kinds]
        return files

    def density_images_inputs(self, wildcards: Any) -> dict[str, str]:
        """Inputs of density_images: the ids to build (selection, or all entries) and a local manifest."""
        d = self.density
        ds = wildcards.dataset
        ids = f"results/density/{ds}/selection.parquet" if d.selection.enabled else f"results/data/{ds}/entries.parquet"
        inputs = {"ids": ids}
        src = d.datasets[ds]
        if src.kind == "local":
            inputs["manifest"] = src.manifest
        return inputs

    def density_train_inputs(self, wildcards: Any) -> dict[str, str]:
        """Inputs of density_train (text embeddings only for ecd_text)."""
        ds = wildcards.dataset
        inputs = {
            "slices": f"results/density/{ECD}/slices.parquet".format(dataset=ds, kind=wildcards.kind),
            "entries": f"results/data/{ds}/entries.parquet",
            "splits": f"results/density/{ds}/splits.json",
        }
        if wildcards.model in TEXT_MODELS:
            inputs["embeddings"] = self.embedding_file(ds, wildcards.encoder, wildcards.variant)
        return inputs

    # ------------------------------------------------------------------ every branch
    def all_prediction_files(self) -> list[str]:
        return self.prediction_files() + self.density_prediction_files()

    def all_reject_files(self) -> list[str]:
        return self.reject_files() + self.density_reject_files()

    def experiment_manifest(self) -> dict[str, Any]:
        """The experiment set of this config, as written to results/experiments.json.

        These are the params of the `experiments` job: Snakemake re-runs it whenever they change
        (its output has its own metadata), and with it `metrics`, which otherwise misses changes
        of the experiment set (new outputs, e.g. parity plots, have no metadata, and then
        Snakemake checks no params or input changes at all). `kind` is "trained" (train/val/test
        rows) or "zeroshot".
        """
        rows = []
        for e in self.experiments():
            key = dict(train_dataset=e["dataset"], target=e["target"], model=e["model"],
                       text_encoder=e["encoder"], text_variant=e["variant"], fold=fold_of(e["fold"]),
                       n_train=size_of(e["size"]), seed=int(e["seed"]))
            rows.append(dict(dataset=e["dataset"], **key, kind="trained"))
            rows += [dict(dataset=ev, **key, kind="zeroshot") for ev in self.zeroshot_sets(e["dataset"], e["target"])]
        for e in self.density_experiments():
            ds = ECD.format(**e)
            rows.append(dict(dataset=ds, train_dataset=ds, target=e["target"], model=e["model"],
                             text_encoder=e["encoder"], text_variant=e["variant"], fold=None, n_train=None,
                             seed=int(e["seed"]), kind="trained"))
        rows = [{k: r[k] for k in EXPERIMENT_KEYS} for r in rows]
        rows.sort(key=lambda r: tuple(str(r[k]) for k in EXPERIMENT_KEYS))
        return {
            "experiments": rows,
            "predictions": sorted(self.all_prediction_files()),
            "rejects": sorted(self.all_reject_files()),
            "parity_plots": self.parity_plots(),
        }

    def final_targets(self) -> list[str]:
        """What ``rule all`` builds for this config: metrics, and the tables of what it configures."""
        out = ["results/metrics.csv", *self.hull_checks()]
        if self.experiments() or self.cromel_files():
            out.append("results/tables/all.md")
        if self.density_experiments():
            out.append("results/tables/massa_table6.md")
        if self.cfg.evaluation.report:
            out.append("results/study/results.md")
        return out + self.ensemble_files() + self.matbench_summaries() + self.generation_targets()

    def report_parity_plots(self) -> list[str]:
        """The parity plots the study report shows (formation energy and band gap of report_parity models)."""
        want = set(self.cfg.evaluation.report_parity)
        return [p for p in self.parity_plots()
                if p.split("/")[-2] in ("formation_energy_per_atom", "band_gap") and p.rsplit("/", 1)[-1][:-4] in want]

    # ------------------------------------------------------------------ params (only what changes an output)
    def dataset_params(self, wildcards: Any) -> dict[str, Any]:
        # `train` (trained on or evaluation-only) does not change the entry table
        # nor do precomputed descriptions (they enter at merge_texts)
        return self.cfg.datasets[wildcards.dataset].model_dump(exclude={"train", "descriptions"})

    def training_params(self, wildcards: Any) -> dict[str, Any]:
        """What changes one training job's output: the settings its model trains with (the config's,
        with the model's registry recipe and ``training.recipes`` applied, lr for its target), not the
        experiment lists. Settings added later are left out at their defaults, so results trained
        before they existed keep their params (no re-run after an upgrade)."""
        from matfuse.config import TrainingConfig

        t = self.cfg.training.for_model(wildcards.model, wildcards.target)
        out = t.model_dump(exclude=EXPERIMENT_LISTS | {"recipes"})
        defaults = TrainingConfig().model_dump()
        for key in LATER_TRAINING_KEYS:
            if out.get(key) == defaults[key]:
                out.pop(key, None)
        hyper_defaults = ModelHyper().model_dump()
        for key in LATER_HYPER_KEYS:
            if out["hyper"].get(key) == hyper_defaults[key]:
                out["hyper"].pop(key, None)
        if out.get("text_encoder") is None:
            out.pop("text_encoder", None)
        if wildcards.model in TOKEN_MODELS:  # the encoder it fine-tunes: the job's `embeddings` entry
            enc = self.cfg.embeddings[wildcards.encoder]
            out["text_encoder"] = enc.model_dump(include={"model", "max_length", "pooling", "allow_download"})
        return out

    def text_params(self) -> dict[str, Any]:
        """What changes a describe job's output (every shard holds all three variants)."""
        return self.cfg.text.model_dump()

    def cromel_params(self, wildcards: Any) -> dict[str, Any] | None:
        """Not the seeds list nor the dataset name (the wildcards): adding a seed runs only that seed."""
        c = self.cfg.cromel
        return c.model_dump(exclude={"seeds", "dataset"}) if c else None

    def density_match_params(self, wildcards: Any) -> dict[str, Any]:
        return self.density.match[wildcards.dataset].model_dump()

    def density_select_params(self, wildcards: Any) -> dict[str, Any]:
        return {"selection": self.density.selection.model_dump()}

    def density_images_params(self, wildcards: Any) -> dict[str, Any]:
        keep = {"grid", "cube_dtype", "store_cubes", "previews", "slice"}
        return {**self.density.model_dump(include=keep),
                "datasets": {wildcards.dataset: self.density.datasets[wildcards.dataset].model_dump()}}

    def density_train_params(self, wildcards: Any) -> dict[str, Any]:
        return self.density.model_dump(include={"model", "train"})

    # ------------------------------------------------------------------ resources
    def res(self, rule: str) -> RuleResources:
        """Threads, memory, run time and GPUs of ``rule`` (``resources:`` in the config)."""
        return self.cfg.resources.of(rule)

    # ------------------------------------------------------------------ checks that need the machine
    def used_encoders(self) -> list[str]:
        """Keys of `embeddings` some job will embed with (training text models, ecd_text)."""
        names: set[str] = set()
        names.update(e["encoder"] for e in self.experiments() if e["encoder"] != NONE)
        d = self.density
        if d is not None and set(d.models) & TEXT_MODELS and d.datasets:
            names.update(e for e in d.encoders if e in self.cfg.embeddings)
        return sorted(names)

    def encoder_problems(self) -> list[str]:
        """Text encoders that are not on this machine (no weights are loaded; hub names: local cache only)."""
        from matfuse.embed.encoder import EncoderUnavailableError, check_encoder_available

        problems = []
        for name in self.used_encoders():
            enc = self.cfg.embeddings[name]
            try:
                check_encoder_available(enc.model, enc.allow_download)
            except EncoderUnavailableError as exc:
                problems.append(f"embeddings.{name} (model: {enc.model}): {exc}")
        return problems


__all__ = ["ECD", "ECD_EXP", "EXP", "EXPERIMENT_KEYS", "NONE", "Plan", "match_file"]
