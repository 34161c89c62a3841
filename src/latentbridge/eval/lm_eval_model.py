"""An lm-evaluation-harness model for a latentbridge run folder (``pip install "latentbridge[lm-eval]"``).

    latentbridge lm-eval --model latentbridge --model_args run=runs/demo,system=bridged,step=best --tasks arc_easy

Importing this module registers the model class ``latentbridge`` with lm-eval; ``latentbridge lm-eval``
is lm-eval's own command line with it registered (lm-eval finds third-party models only once they are
imported: it has no entry-point group for them). From Python::

    import lm_eval, latentbridge.eval.lm_eval_model  # noqa: F401  (registers "latentbridge")
    lm_eval.simple_evaluate(model="latentbridge", model_args="run=runs/demo,system=bridged", tasks=[...])

``system`` is ``target`` (the frozen target alone), ``source`` (the source alone) or ``bridged``: the
source reads the request's context (as a prompt: the context, its end taken as the cue when it ends
with the run's task cue), the run's translator turns the source's states into the message, and the
target reads it as in training (the recipe's injection mode, with the context as the prompt text)
followed by the continuation. ``step`` is ``best`` (the weights chosen on dev) or ``final``.

Tokenization and scoring follow lm-eval's Hugging Face model (``hf``): the same context/continuation
split, the same empty-context prefix token, the same rolling windows, so ``system=target`` gives the
scores ``hf`` gives on the same model folder. Requests are scored in batches of ``batch_size``, in
their order, greedily (``do_sample`` is refused): the same requests give the same results.
``loglikelihood_rolling`` for ``bridged``: the source reads an empty prompt (a rolling request has no
context), so the target's score measures what the message adds to any text.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

try:
    from lm_eval.api.model import TemplateLM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise ImportError('the lm-eval adapter needs lm-evaluation-harness: pip install "latentbridge[lm-eval]"') from exc

from latentbridge.api.segments import Text
from latentbridge.api.task import Prompt
from latentbridge.bridge.generation import greedy_generate
from latentbridge.bridge.layout import assemble
from latentbridge.errors import LatentBridgeError
from latentbridge.eval.choices import supervised_logprobs
from latentbridge.eval.harness import item_seed
from latentbridge.io.digest import json_digest
from latentbridge.registry.host import get_registry
from latentbridge.runtime.precision import autocast

SYSTEMS = ("target", "source", "bridged")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEFAULT_MAX_LENGTH = 2048  # lm-eval's hf default when neither the config nor the tokenizer says


@register_model("latentbridge")
class LatentBridgeLM(TemplateLM):
    """A latentbridge run folder as an lm-eval model (see the module's docstring)."""

    def __init__(self, run: str, system: str = "bridged", step: str = "best", batch_size: int | str = 8,
                 device: str | None = None, max_length: int | None = None, max_gen_toks: int = 256,
                 dtype: str | None = None, max_batch_size: int | None = None, **unknown: Any):
        super().__init__()
        from latentbridge.bridge.build import Experiment
        from latentbridge.config.recipe import load_recipe
        from latentbridge.config.schema import did_you_mean

        if unknown:  # a misspelt argument must not quietly leave its default in force (sytem=target -> bridged)
            known = ["run", "system", "step", "batch_size", "device", "max_length", "max_gen_toks", "dtype",
                     "max_batch_size"]
            name = sorted(unknown)[0]
            raise LatentBridgeError(f"lm-eval model 'latentbridge': unknown model argument '{name}'"
                                    f"{did_you_mean(name, known)}; the arguments: {', '.join(known)}")
        if dtype is not None and str(dtype) not in DTYPES:
            raise LatentBridgeError(f"lm-eval model 'latentbridge': dtype must be one of {', '.join(DTYPES)}, "
                                    f"got '{dtype}'")

        if system not in SYSTEMS:
            raise LatentBridgeError(f"lm-eval model 'latentbridge': system must be one of {', '.join(SYSTEMS)}, got '{system}'")
        if step not in ("best", "final"):
            raise LatentBridgeError(f"lm-eval model 'latentbridge': step must be 'best' or 'final', got '{step}'")
        folder = Path(run)
        if not (folder / "recipe.yaml").is_file():
            raise LatentBridgeError(f"lm-eval model 'latentbridge': {folder} is not a run folder (no recipe.yaml)")
        weights = folder / "best" if step == "best" else folder
        if system == "bridged" and not (weights / "translator.safetensors").is_file():
            raise LatentBridgeError(f"lm-eval model 'latentbridge': no translator weights in {weights}")
        if device and device.startswith("cuda") and not torch.cuda.is_available():
            device = None  # lm-eval's default device is cuda:0: on a machine without CUDA, the recipe's (auto) stands, as hf does
        overrides = [f"models.device={device}"] if device else []
        if dtype is not None:  # honoured as the recipe's models.dtype (both models)
            overrides.append(f"models.dtype={dtype}")
        recipe = load_recipe(folder / "recipe.yaml", overrides)
        if system == "bridged" and get_registry().get("injection", recipe.injection.name).cls.caches_lead:
            # lm-eval hands over one context string: its few-shot exemplars cannot be told from the question,
            # so the message would go before them, not after them where training put it
            raise LatentBridgeError(f"lm-eval model 'latentbridge': system=bridged cannot run injection "
                                    f"'{recipe.injection.name}' (the message after the few-shot header): lm-eval's "
                                    "requests do not mark where the header ends; use a run with soft_plus_text")
        self.experiment = Experiment.build(recipe, translator_dir=str(weights) if system == "bridged" else None)
        self.bridge = self.experiment.bridge
        self.bridge.translator.eval()
        self.system = system
        self.frozen = self.bridge.source if system == "source" else self.bridge.target
        self.tokenizer = self.frozen.tokenizer
        self.cue = self.experiment.task.config.cue
        self.chat_recipe = bool(getattr(self.experiment.task.config, "chat_template", False))
        self._rendered: dict[str, Prompt] = {}  # bridged chat renderings -> the prompts they stand for
        self.autocast = recipe.models.autocast
        self.batch_size_per_gpu = _batch_size(batch_size, max_batch_size)
        self._max_length = int(max_length) if max_length else None
        self._max_gen_toks = int(max_gen_toks)

    # -- what lm-eval asks of a model ------------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        if self._max_length:
            return self._max_length
        config = self.frozen.model.config
        for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, attr, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and limit < 10**9 else DEFAULT_MAX_LENGTH

    @property
    def device(self) -> torch.device:
        return self.frozen.device

    @property
    def tokenizer_name(self) -> str:  # lm-eval's --cache_requests key: renderings with other template variables apart
        variables = self.bridge.target_encoder.chat_kwargs
        return self.tokenizer.name_or_path.replace("/", "__") + (f"__{json_digest(variables, 8)}" if variables else "")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs: Any) -> list[int]:
        """As lm-eval's ``hf`` encodes: the tokenizer's own special tokens unless told, none when the
        string already opens with the BOS text."""
        options = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            options["add_special_tokens"] = False
        ids = list(self.tokenizer.encode(string, **options))
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """``--apply_chat_template``. ``target`` and ``source`` render the history with their own
        tokenizer's template, as lm-eval's ``hf`` does (a template that refuses the system role gets the
        history without it). ``bridged`` needs a recipe with ``task.chat_template: true``: each model reads
        the conversation through its own template as in training, the message at the start of the last
        user turn and a trailing cue after the template's assistant opening. Earlier turns (a system
        instruction, ``--fewshot_as_multiturn``'s exchanges) are rendered before it by each template
        (:attr:`Prompt.turns`); a conversation must end in a user turn (a task's ``gen_prefix`` is refused).
        The text returned is the target's, without trailing whitespace (lm-eval would move it into the
        continuation, where the template's own would be read twice); a request's context is looked up among
        the renderings (one-turn ones are also read back from the text alone, :meth:`_chat_prompt`, so that
        requests cached by lm-eval read alike)."""
        if self.system != "bridged":
            return _render_chat(self.tokenizer, chat_history, add_generation_prompt, self.frozen.name,
                                self.bridge.target_encoder.chat_kwargs)
        if not self.chat_recipe:
            raise LatentBridgeError("lm-eval model 'latentbridge': --apply_chat_template with system=bridged needs a "
                                    "run whose recipe reads chat templates (task.chat_template: true); this run's "
                                    "bridge was trained on plain prompts (system=target and source take it)")
        roles = [m.get("role") for m in chat_history]
        body = roles[1:] if roles[:1] == ["system"] else roles
        if not add_generation_prompt or not body or body[-1] != "user" or body[::2] != ["user"] * len(body[::2]) \
                or body[1::2] != ["assistant"] * len(body[1::2]):
            raise LatentBridgeError(f"lm-eval model 'latentbridge': system=bridged reads a conversation of "
                                    f"[system,] (user, assistant)... user, the message in the last user turn (got the "
                                    f"roles {roles}{'' if add_generation_prompt else ', continuing the last message'}); "
                                    "a task's gen_prefix works with system=target and source, not with bridged")
        content = chat_history[-1]["content"]  # the user's message as written (a trailing cue goes after the turn)
        cue = self.cue if self.cue and content.rstrip().endswith(self.cue) else ""
        question = content.rstrip()[: -len(cue)] if cue else content
        turns = tuple((m["role"], m["content"]) for m in chat_history[:-1])
        prompt = Prompt(header="", question=question, cue=cue, answer="", turns=turns)
        text = self.bridge.target_encoder.text(prompt).rstrip()
        self._rendered[text] = prompt
        return text

    def _chat_prompt(self, text: str) -> Prompt | None:
        """The prompt a bridged chat rendering (what :meth:`apply_chat_template` returned) stands for: the
        target's template opening, the user's message, the template's closing (its trailing whitespace cut
        when nothing follows it) and the cue; None for any other text."""
        if text in self._rendered:
            return self._rendered[text]
        pieces = self.bridge.target_encoder.chat
        if pieces is None or not text.startswith(pieces[0]):
            return None
        body, cue = text, ""
        if self.cue and body.endswith(self.cue):
            body, cue = body[: -len(self.cue)], self.cue
        closing = pieces[1] if cue else pieces[1].rstrip()
        if not closing or not body.endswith(closing) or len(body) < len(pieces[0]) + len(closing):
            return None
        question = body[len(pieces[0]) : len(body) - len(closing)]
        if self._looks_rendered(question):  # a turn ends inside it: a conversation not rendered here
            raise LatentBridgeError("lm-eval model 'latentbridge': system=bridged got a chat context of several turns "
                                    "that this model did not render (read from lm-eval's request cache?); rerun "
                                    "without --cache_requests")
        return Prompt(header="", question=question, cue=cue, answer="")

    def _looks_rendered(self, text: str) -> bool:
        """Whether ``text`` holds the target's chat template's own text: its BOS at the start, or the closing
        of a user turn where that closing is markup (``[/INST]``, ``<|eot_id|>...``: what a plain lm-eval context
        does not hold; a closing of plain words is not taken as a sign)."""
        pieces = self.bridge.target_encoder.chat
        bos = self.bridge.target.tokenizer.bos_token
        closing = pieces[1].strip() if pieces else ""
        markup = any(not (c.isalnum() or c.isspace()) for c in closing)
        return bool((bos and text.startswith(bos)) or (markup and closing in text))

    def get_model_info(self) -> dict[str, Any]:
        return {"model_system": self.system, "model_source": self.bridge.source.name, "model_target": self.bridge.target.name}

    # -- scoring ---------------------------------------------------------------------------------------

    def _prompt(self, context: str | None) -> Prompt:
        """The prompt the source reads (and the bridged target's prompt text) for a request's context
        (a chat request: the prompt its rendering stands for)."""
        text = "" if context is None else context.rstrip()  # lm-eval moves the trailing spaces to the continuation
        if self.chat_recipe and context is not None:  # a rendering is read back, not templated twice
            rendered = self._chat_prompt(text)
            if rendered is not None:
                return rendered
            if self.system == "bridged" and self._looks_rendered(text):
                raise LatentBridgeError("lm-eval model 'latentbridge': system=bridged got a chat rendering that this "
                                        "model did not make and cannot read back (a system turn or several turns, "
                                        "from lm-eval's request cache?); rerun without --cache_requests")
        cue = self.cue if self.cue and text.endswith(self.cue) else ""
        if not text and not self.bridge.source_encoder.prefix:  # the source must read at least one token
            source = self.bridge.source.tokenizer
            text = source.bos_token or source.eos_token or ""
        return Prompt(header="", question=text[: len(text) - len(cue)], cue=cue, answer="")

    def _message(self, prompts: Sequence[Prompt]) -> Any:
        """The translator's message for ``prompts``, seeded by each prompt's text (a request has no item id)."""
        return self.bridge.message(prompts, torch.tensor([item_seed(p.text) for p in prompts], dtype=torch.long))

    def _rows(self, batch: Sequence[tuple[Any, list[int], list[int]]]) -> Any:
        """The inputs of one batch of ``(request args or None, context ids, continuation ids)``."""
        if self.system != "bridged":
            rows = []
            for _, context, continuation in batch:
                # as hf: the last max_length tokens before the final one are read (the final one is only scored)
                whole = (list(context) + list(continuation))[-(self.max_length + 1) :]
                cut = len(whole) - len(continuation)
                rows.append([Text(whole[:cut]), Text(whole[cut:], supervised=True)])
            return assemble(rows, None, self.frozen.embed, self.frozen.pad_id)
        prompts = [self._prompt(None if args is None else args[0]) for args, _, _ in batch]
        message = self._message(prompts)
        # a rolling window's context (beyond the first window's prefix token) is read before the scored tokens
        answers = [((() if args is not None else _after_prefix(context, self.prefix_token_id)), list(continuation))
                   for args, context, continuation in batch]
        return self.bridge.bridged_inputs(message, prompts, with_answer=True, answers=answers)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests: Sequence[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **_: Any) -> list[tuple[float, bool]]:
        results: list[tuple[float, bool]] = []
        bar = _bar(len(requests), "Running loglikelihood requests", disable_tqdm)
        for start in range(0, len(requests), self.batch_size_per_gpu):
            batch = requests[start : start + self.batch_size_per_gpu]
            with autocast(self.frozen.device, self.frozen.dtype, self.autocast):
                totals, greedy = supervised_logprobs(self.frozen.model, self._rows(batch))
            for (args, _, _), total, is_greedy in zip(batch, totals, greedy, strict=True):
                results.append((float(total), bool(is_greedy)))
                if args is not None:
                    self.cache_hook.add_partial("loglikelihood", args, (float(total), bool(is_greedy)))
            bar.update(len(batch))
        bar.close()
        return results

    def loglikelihood_rolling(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[float]:
        windows: list[tuple[int, tuple[None, list[int], list[int]]]] = []
        for index, request in enumerate(requests):
            (string,) = request.args
            for context, scored in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((index, (None, context, scored)))
        scores = self._loglikelihood_tokens([w for _, w in windows], disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for (index, _), (logprob, _) in zip(windows, scores, strict=True):
            totals[index] += logprob
        for request, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    @torch.no_grad()
    def generate_until(self, requests: Sequence[Any], disable_tqdm: bool = False) -> list[str]:
        outputs: list[str] = []
        bar = _bar(len(requests), "Running generate_until requests", disable_tqdm)
        for start in range(0, len(requests), self.batch_size_per_gpu):
            batch = requests[start : start + self.batch_size_per_gpu]
            bar.update(len(batch))
            settings = [_generation_settings(r.args[1], self._max_gen_toks) for r in batch]
            groups: dict[tuple[tuple[str, ...], int], list[int]] = {}
            for i, setting in enumerate(settings):
                groups.setdefault(setting, []).append(i)
            texts: dict[int, str] = {}
            for (until, max_new), members in groups.items():
                contexts = [batch[i].args[0] for i in members]
                for i, text in zip(members, self._generate(contexts, list(until), max_new), strict=True):
                    texts[i] = text
            for i, request in enumerate(batch):
                outputs.append(texts[i])
                self.cache_hook.add_partial("generate_until", request.args, texts[i])
        bar.close()
        return outputs

    def _generate(self, contexts: Sequence[str], until: list[str], max_new: int) -> list[str]:
        model = self.frozen
        if self.system == "bridged":
            prompts = [self._prompt(c) for c in contexts]
            inputs = self.bridge.bridged_inputs(self._message(prompts), prompts, with_answer=False)
        else:
            rows = [[Text(self.tok_encode(c, left_truncate_len=max(1, self.max_length - max_new)))] for c in contexts]
            inputs = assemble(rows, None, model.embed, model.pad_id)
        eos = model.eos_ids() | ({self.eot_token_id} if self.eot_token_id is not None else set())
        with autocast(model.device, model.dtype, self.autocast):
            outs = greedy_generate(model.model, model.tokenizer, inputs, max_new_tokens=max_new, eos_ids=eos, stop=until)
        return [o.text for o in outs]


def _render_chat(tokenizer: Any, history: list[dict[str, str]], add_generation_prompt: bool, name: str,
                 variables: dict[str, Any]) -> str:
    """``history`` through ``tokenizer``'s chat template, as lm-eval's ``hf`` renders it (and ``variables``)."""
    if not getattr(tokenizer, "chat_template", None):
        raise LatentBridgeError(f"lm-eval model 'latentbridge': --apply_chat_template, but {name}'s tokenizer has no chat template")
    import jinja2

    options = {"tokenize": False, "add_generation_prompt": add_generation_prompt,
               "continue_final_message": not add_generation_prompt, **variables}
    try:
        return tokenizer.apply_chat_template(history, **options)
    except jinja2.exceptions.TemplateError:  # as hf: a template without a system role gets the history without it
        print(f"latentbridge: the chat template of {name} refuses the history; reading it without the system role",
              file=sys.stderr)
        return tokenizer.apply_chat_template([m for m in history if m.get("role") != "system"], **options)


def _bar(total: int, description: str, disable: bool) -> Any:
    """A progress bar over requests, as lm-eval's ``hf`` model shows (tqdm, on stderr)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, disable=disable)


def _after_prefix(context: Sequence[int], prefix_token: int) -> tuple[int, ...]:
    """A rolling window's context as the bridged target reads it: the first window's lone prefix token
    is the target's own prefix, which the injection already places."""
    return () if list(context) == [prefix_token] else tuple(context)


def _generation_settings(kwargs: dict[str, Any] | None, default_max: int) -> tuple[tuple[str, ...], int]:
    kwargs = dict(kwargs or {})
    if kwargs.get("do_sample"):
        raise LatentBridgeError("lm-eval model 'latentbridge' decodes greedily: do_sample is not supported")
    until = kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    return tuple(until), int(kwargs.get("max_gen_toks", default_max))


AUTO_BATCH = 8  # what batch_size=auto means here: no search for the largest batch that fits


def _batch_size(value: int | str | None, cap: int | None = None) -> int:
    """The batch size: an integer, or ``auto`` (:data:`AUTO_BATCH`, said on stderr, capped by
    ``max_batch_size``: latentbridge does not search for the largest batch that fits, as ``hf`` does)."""
    if value is None or (isinstance(value, str) and value.startswith("auto")):
        size = min(AUTO_BATCH, int(cap)) if cap else AUTO_BATCH
        print(f"latentbridge: batch_size=auto is not searched for; using batch size {size} (give batch_size=N "
              "to choose)", file=sys.stderr)
        return size
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise LatentBridgeError(f"lm-eval model 'latentbridge': batch_size must be an integer or 'auto', got "
                                f"'{value}'") from None
    if size < 1:
        raise LatentBridgeError(f"lm-eval model 'latentbridge': batch_size must be at least 1, got {size}")
    return size
