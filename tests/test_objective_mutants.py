"""Tests that pin each objective to a value computed by hand or forced by structure, so that a wrong
version of it fails (a reversed KL, a KL off by one position, a weight applied inside ``compute``, a
prompt alignment aimed at the answer, a contrastive loss in one direction, a probe without its label
head). See tests/README.md and benchmarks/mutation.md for the mutation run these were written against.

Most tests build a :class:`StepContext` by hand from small tensors (``quantities`` maps a quantity's
name to a function of the context), so they are exact and fast; the tests that loop over every
built-in objective use the session's tiny random pair.
"""

from __future__ import annotations

import dataclasses
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from latentbridge import BuildContext, StepContext, TargetText
from latentbridge.api.messages import SoftTokens
from latentbridge.api.segments import IGNORE_INDEX, TargetInputs
from latentbridge.api.task import Example
from latentbridge.registry.host import Registry
from latentbridge.train.loss import scheduled_weights, weighted_loss

from .test_objectives import BUILTIN, context, experiment, spy_on_answers

REGISTRY = Registry.load(autoload=False)

# Objectives being redesigned elsewhere: the loops below skip them for now. Remove a name from this set
# to include it; nothing else needs to change.
PENDING_REDESIGN: set[str] = set()  # objectives left out while redesigned (none now)
# Objectives that read only the question (and the labels), never the answer.
QUESTION_ONLY = {"prompt_alignment", "contrastive_prompt", "probe_head"}

QUANTITIES = {q.name: q.compute for q in REGISTRY.quantities()}  # the built-in step quantities


def build(name: str, bctx: BuildContext | None = None, **options):
    entry = REGISTRY.get("objective", name)
    return entry.cls(REGISTRY.config_for("objective", name, options), bctx or BuildContext(8, 4, 2))


def inputs_from_labels(labels: list[list[int]], d: int = 3) -> TargetInputs:
    """Left-padded inputs whose only meaningful part is ``labels`` (``-100`` off the answer)."""
    lab = torch.tensor(labels)
    b, n = lab.shape
    mask = torch.ones(b, n, dtype=torch.long)
    return TargetInputs(torch.zeros(b, n, d), mask, torch.arange(n).expand(b, n), lab)


def predicting_index(column: int, length: int, window: int) -> int:
    """The logits index (logits cover the last ``window`` of ``length`` positions) that predicts the
    label at ``column``: the position before it."""
    return column - 1 - (length - window)


def supervised(labels: list[list[int]]) -> list[tuple[int, int]]:
    return [(r, j) for r, row in enumerate(labels) for j, v in enumerate(row) if v != IGNORE_INDEX]


def kl_by_hand(p_logits: torch.Tensor, q_logits: torch.Tensor, tau: float) -> float:
    """KL(softmax(p/tau) || softmax(q/tau)) of two vectors, written out."""
    p = torch.softmax(p_logits.double() / tau, -1)
    q = torch.softmax(q_logits.double() / tau, -1)
    return float((p * (p.log() - q.log())).sum())


def value(loss: torch.Tensor) -> float:
    return float(loss.detach())


def reweighted(objective, weight: float):
    """The same objective (same options, same parameters) built with another ``config.weight``."""
    other = type(objective)(dataclasses.replace(objective.config, weight=weight), objective.build_context)
    other.load_state_dict(objective.state_dict())
    return other


# ---------------------------------------------------------------------------------------------------
# kl
# ---------------------------------------------------------------------------------------------------

# the student reads 7 positions, the teacher (the literal prompt) 9; the logits cover the last W = 5
STUDENT_LABELS = [[-100, -100, -100, -100, 11, 12, 13],
                  [-100, -100, -100, -100, -100, 14, 15]]
TEACHER_LABELS = [[-100] * 2 + row for row in STUDENT_LABELS]
V, W = 6, 5


def kl_context(student: torch.Tensor, teacher: torch.Tensor, teacher_labels=TEACHER_LABELS) -> StepContext:
    return StepContext(
        step=1, soft=torch.zeros(2, 2, 3), inputs=inputs_from_labels(STUDENT_LABELS),
        quantities={"logits": lambda c: student, "teacher_logits": lambda c: teacher,
                    "teacher_inputs": lambda c: inputs_from_labels(teacher_labels)},
    )


def kl_expected(student, teacher, tau, limit=None):
    total, count = 0.0, 0
    for r, row in enumerate(STUDENT_LABELS):
        answer = [j for j, v in enumerate(row) if v != IGNORE_INDEX][:limit]
        for j in answer:
            i = predicting_index(j, len(row), W)
            total += kl_by_hand(teacher[r, i], student[r, i], tau)
            count += 1
    return total / count * tau**2


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_kl_is_teacher_to_student_at_the_answer_positions(tau):
    """tau^2 * mean over answer positions of sum p_teacher (log p_teacher - log p_student), on logits
    where the two directions differ; a reversed KL (student || teacher) gives another value."""
    g = torch.Generator().manual_seed(0)
    student = torch.randn(2, W, V, generator=g) * 3
    teacher = torch.randn(2, W, V, generator=g) * 3
    expected = kl_expected(student, teacher, tau)
    reverse = kl_expected(teacher, student, tau)
    assert abs(expected - reverse) > 0.05 * expected  # the data tell the directions apart
    loss = build("kl", temperature=tau)(kl_context(student, teacher))
    assert value(loss) == pytest.approx(expected, rel=1e-5)


def test_kl_is_zero_when_the_aligned_positions_agree_and_only_they():
    """Student logits equal to the teacher's at the positions that predict the answer give exactly 0,
    whatever the other positions hold; a KL off by one position compares the wrong ones."""
    g = torch.Generator().manual_seed(1)
    student = torch.randn(2, W, V, generator=g) * 3
    teacher = torch.randn(2, W, V, generator=g) * 3  # different everywhere...
    for r, j in supervised(STUDENT_LABELS):
        i = predicting_index(j, len(STUDENT_LABELS[r]), W)
        teacher[r, i] = student[r, i]  # ...except where the answer is predicted
    assert value(build("kl")(kl_context(student, teacher))) == 0.0
    # and one aligned position that disagrees is seen
    teacher[1, predicting_index(6, 7, W)] += torch.arange(V, dtype=torch.float)
    assert value(build("kl")(kl_context(student, teacher))) > 1e-3


def test_kl_answer_tokens_limits_each_row_to_its_first_tokens():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, W, V, generator=g), torch.randn(2, W, V, generator=g)
    loss = build("kl", answer_tokens=1, temperature=1.5)(kl_context(student, teacher))
    assert value(loss) == pytest.approx(kl_expected(student, teacher, 1.5, limit=1), rel=1e-5)
    assert kl_expected(student, teacher, 1.5, limit=1) != pytest.approx(kl_expected(student, teacher, 1.5))
    two = build("kl", answer_tokens=2)(kl_context(student, teacher))
    assert value(two) == pytest.approx(kl_expected(student, teacher, 1.0, limit=2), rel=1e-5)


def test_kl_refuses_a_teacher_whose_answer_is_not_aligned():
    g = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, W, V, generator=g), torch.randn(2, W, V, generator=g)
    shifted = [row[1:] + [-100] for row in TEACHER_LABELS]  # the teacher's answer one position early
    with pytest.raises(RuntimeError, match=r"^kl: teacher and student answers are not aligned$"):
        build("kl")(kl_context(student, teacher, shifted))


def test_kl_on_a_real_step_matches_the_formula(random_pair):
    """On the tiny pair, with the real quantities: the value is the hand-computed KL at the aligned
    positions of the student's and the teacher's own (differently long) inputs. A low temperature,
    because the random models' distributions are nearly flat (at tau 1 the KL is about 2e-5)."""
    tau = 0.05
    exp = experiment(random_pair, "kl", f"objectives.kl.temperature={tau}")
    ctx = context(exp, exp.task.examples("train")[:4])
    loss = float(exp.objectives["kl"](ctx).detach())
    student, teacher = ctx.logits.detach(), ctx.get("teacher_logits")
    s_labels, t_labels = ctx.inputs.labels, ctx.get("teacher_inputs").labels
    assert s_labels.shape[1] != t_labels.shape[1]
    window = student.shape[1]

    def by_hand(offset=0, reverse=False):
        total, count = 0.0, 0
        for r in range(s_labels.shape[0]):
            s_cols = (s_labels[r] != IGNORE_INDEX).nonzero().flatten().tolist()
            t_cols = (t_labels[r] != IGNORE_INDEX).nonzero().flatten().tolist()
            assert s_labels[r, s_cols].tolist() == t_labels[r, t_cols].tolist()
            for js, jt in zip(s_cols, t_cols, strict=True):
                s = student[r, predicting_index(js, s_labels.shape[1], window) + offset]
                t = teacher[r, predicting_index(jt, t_labels.shape[1], window) + offset]
                total += kl_by_hand(s, t, tau) if reverse else kl_by_hand(t, s, tau)
                count += 1
        return total / count * tau**2

    expected = by_hand()
    for wrong in (by_hand(offset=1), by_hand(reverse=True)):  # the step tells these apart
        assert abs(wrong - expected) > 0.01 * expected
    assert loss == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------------------------------------------
# skyline
# ---------------------------------------------------------------------------------------------------

N_LAYERS, D = 3, 4


def skyline_context(student, teacher, student_logits=None, teacher_logits=None, teacher_labels=TEACHER_LABELS):
    """``student``/``teacher``: ``layers b W d`` states (the last W positions), as the quantities give them."""
    zeros = torch.zeros(2, W, V)
    return StepContext(
        step=1, soft=torch.zeros(2, 2, 3), inputs=inputs_from_labels(STUDENT_LABELS),
        quantities={"window": lambda c: W, "skyline_inputs": lambda c: inputs_from_labels(teacher_labels),
                    "bridged_outputs": lambda c: (student, zeros if student_logits is None else student_logits),
                    "skyline_outputs": lambda c: (teacher, zeros if teacher_logits is None else teacher_logits)},
    )


def skyline_by_hand(student, teacher, offset=0, per_layer=True):
    """Mean over layers of (mean squared difference at the positions predicting the answer) / (the
    teacher's mean square there), those positions written out one by one."""
    cells = [(r, predicting_index(j, len(STUDENT_LABELS[r]), W) + offset) for r, j in supervised(STUDENT_LABELS)]
    ratios, errors, scales = [], [], []
    for layer in range(student.shape[0]):
        error = sum(float(((student[layer, r, i] - teacher[layer, r, i]) ** 2).mean()) for r, i in cells) / len(cells)
        scale = sum(float((teacher[layer, r, i] ** 2).mean()) for r, i in cells) / len(cells)
        ratios.append(error / scale)
        errors.append(error)
        scales.append(scale)
    if not per_layer:
        return sum(errors) / sum(scales)
    return sum(ratios) / len(ratios)


def skyline_states(seed: int, spread: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1.0, 10.0, 100.0]).view(N_LAYERS, 1, 1, 1)  # layers of very different sizes
    student = torch.randn(N_LAYERS, 2, W, D, generator=g) * scale
    teacher = student + spread * torch.randn(N_LAYERS, 2, W, D, generator=g) * scale
    return student, teacher


def test_skyline_states_are_each_layer_s_squared_error_over_its_scale_at_the_answer():
    """Each layer's error divided by the teacher's mean square there, averaged over layers, at the positions
    predicting the answer: one position early, or one scale for every layer, give other values."""
    student, teacher = skyline_states(0)
    expected = skyline_by_hand(student, teacher)
    for wrong in (skyline_by_hand(student, teacher, offset=1), skyline_by_hand(student, teacher, per_layer=False)):
        assert abs(wrong - expected) > 0.05 * expected
    assert value(build("skyline")(skyline_context(student, teacher))) == pytest.approx(expected, rel=1e-5)
    assert value(build("skyline", states=0.5)(skyline_context(student, teacher))) == pytest.approx(expected / 2, rel=1e-5)


def test_skyline_is_zero_when_the_aligned_positions_agree_and_only_they():
    student, teacher = skyline_states(1)
    for r, j in supervised(STUDENT_LABELS):
        i = predicting_index(j, len(STUDENT_LABELS[r]), W)
        teacher[:, r, i] = student[:, r, i]
    assert value(build("skyline")(skyline_context(student, teacher))) == 0.0
    teacher[2, 1, predicting_index(6, 7, W)] += 1.0  # one aligned position of one layer disagrees
    assert value(build("skyline")(skyline_context(student, teacher))) > 1e-6


def test_skyline_logits_term_is_kl_from_the_skyline():
    g = torch.Generator().manual_seed(4)
    student, _ = skyline_states(2)
    student_logits = torch.randn(2, W, V, generator=g) * 3
    teacher_logits = torch.randn(2, W, V, generator=g) * 3
    ctx = skyline_context(student, student.clone(), student_logits, teacher_logits)  # the states agree
    loss = build("skyline", states=1.0, logits=0.3)(ctx)
    assert value(loss) == pytest.approx(0.3 * kl_expected(student_logits, teacher_logits, 1.0), rel=1e-5)
    assert value(build("skyline")(ctx)) == 0.0  # off by default


def test_skyline_refuses_a_teacher_whose_answer_is_not_aligned():
    student, teacher = skyline_states(3)
    shifted = [row[1:] + [-100] for row in TEACHER_LABELS]
    with pytest.raises(RuntimeError, match=r"^skyline: the skyline's answers and the bridged input's are not aligned$"):
        build("skyline")(skyline_context(student, teacher, teacher_labels=shifted))


# ---------------------------------------------------------------------------------------------------
# nll
# ---------------------------------------------------------------------------------------------------

NLL_LABELS = [[-100, -100, -100, -100, 21, 22, 23],  # three answer tokens
              [-100, -100, -100, -100, -100, -100, 24],  # one
              [-100, -100, -100, -100, -100, -100, -100]]  # none (skipped by 'example')


def nll_context(logits: torch.Tensor, labels=NLL_LABELS) -> StepContext:
    return StepContext(step=1, soft=torch.zeros(len(labels), 2, 3), inputs=inputs_from_labels(labels),
                       quantities={"logits": lambda c: logits})


@pytest.mark.parametrize("reduction", ["token", "example"])
def test_nll_is_the_cross_entropy_of_the_next_token(reduction):
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, W, 30, generator=g) * 2
    logp = torch.log_softmax(logits.double(), -1)
    per_row = []
    for r, row in enumerate(NLL_LABELS):
        terms = [-float(logp[r, predicting_index(j, len(row), W), row[j]]) for j, v in enumerate(row) if v != -100]
        per_row.append(terms)
    tokens = [t for row in per_row for t in row]
    expected = {"token": sum(tokens) / len(tokens),
                "example": sum(sum(t) / len(t) for t in per_row if t) / sum(1 for t in per_row if t)}
    assert expected["token"] != pytest.approx(expected["example"])
    loss = build("nll", reduction=reduction)(nll_context(logits))
    assert value(loss) == pytest.approx(expected[reduction], rel=1e-5)


def test_nll_is_zero_only_when_the_position_before_each_answer_token_predicts_it():
    logits = torch.zeros(3, W, 30)
    for r, j in supervised(NLL_LABELS):
        logits[r, predicting_index(j, 7, W), NLL_LABELS[r][j]] = 60.0  # certain of the right token
    assert value(build("nll")(nll_context(logits))) == pytest.approx(0.0, abs=1e-6)
    shifted = torch.roll(logits, 1, dims=1)  # the same certainty one position late
    assert value(build("nll")(nll_context(shifted))) > 10


def test_nll_refuses_a_batch_without_answer_tokens():
    with pytest.raises(ValueError, match=r"^nll: the batch has no supervised answer tokens$"):
        build("nll")(nll_context(torch.zeros(1, W, 30), [[-100] * 7]))


def test_answer_nll_reduces_over_tokens_by_default():
    """format_penalty calls answer_nll without a reduction: the default is the mean over tokens."""
    from latentbridge.plugins.objectives.nll import answer_nll

    g = torch.Generator().manual_seed(10)
    logits = torch.randn(3, W, 30, generator=g)
    labels = torch.tensor(NLL_LABELS)[:, -W:]
    torch.testing.assert_close(answer_nll(logits, labels), answer_nll(logits, labels, "token"))
    assert float(answer_nll(logits, labels)) != pytest.approx(float(answer_nll(logits, labels, "example")))


# ---------------------------------------------------------------------------------------------------
# prompt_alignment
# ---------------------------------------------------------------------------------------------------

D = 6
QUESTION, ANSWER, HEADER, CUE = [3, 4, 5, 6], [7, 8, 9, 10], [11, 12], [13, 14]


def embedding() -> torch.nn.Embedding:
    torch.manual_seed(0)
    return torch.nn.Embedding(20, D)


def target_text(question=QUESTION, answer=ANSWER, header=HEADER) -> TargetText:
    prompt = [*header, *question, *CUE]
    return TargetText(prefix=[1], prompt=prompt, question_span=(len(header), len(header) + len(question)),
                      cue=CUE, answer=answer)


def text_context(soft: torch.Tensor, texts, emb) -> StepContext:
    """A step on hand-made target texts, the target's embedding ``emb``, and the built-in quantities."""
    return StepContext(step=1, soft=soft, inputs=inputs_from_labels([[-100, 1]] * len(texts)), texts=texts,
                       target=SimpleNamespace(embed=emb), quantities=QUANTITIES)


def halves(emb, ids) -> torch.Tensor:
    """k = 2 chunks of a 4-token text: the mean of its first two and of its last two embeddings."""
    with torch.no_grad():
        e = emb(torch.tensor(ids))
    return torch.stack([e[:2].mean(0), e[2:].mean(0)])


@pytest.mark.parametrize("metric", ["cosine", "mse"])
def test_prompt_alignment_is_zero_at_the_question_and_not_at_the_answer(metric):
    emb = embedding()
    objective = build("prompt_alignment", metric=metric)
    texts = [target_text(), target_text([15, 16, 17, 18], [7, 8, 9, 9])]
    on_question = torch.stack([halves(emb, QUESTION), 2.5 * halves(emb, [15, 16, 17, 18])])  # any scale
    on_answer = torch.stack([halves(emb, ANSWER), 2.5 * halves(emb, [7, 8, 9, 9])])
    at_question = value(objective(text_context(on_question, texts, emb)))
    at_answer = value(objective(text_context(on_answer, texts, emb)))
    assert at_question == pytest.approx(0.0, abs=1e-6)
    assert at_answer > 0.1


@pytest.mark.parametrize("metric", ["cosine", "mse"])
def test_prompt_alignment_matches_the_formula(metric):
    emb = embedding()
    soft = torch.randn(2, 2, D, generator=torch.Generator().manual_seed(5))
    texts = [target_text(), target_text([15, 16, 17, 18])]
    chunks = torch.stack([halves(emb, QUESTION), halves(emb, [15, 16, 17, 18])])
    a, b = soft.double(), chunks.double()
    if metric == "cosine":
        expected = (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))).mean()
    else:
        rms = lambda x: x.pow(2).mean(-1, keepdim=True).sqrt()  # noqa: E731
        expected = (a / rms(a) - b / rms(b)).pow(2).mean()
    loss = build("prompt_alignment", metric=metric)(text_context(soft, texts, emb))
    assert value(loss) == pytest.approx(float(expected), rel=1e-5)


def test_prompt_alignment_reads_the_question_alone():
    """Changing only the question changes the loss; changing only the answer, or the few-shot header
    around the question, does not (the old question-dependence test swapped whole examples)."""
    emb = embedding()
    soft = torch.randn(1, 2, D, generator=torch.Generator().manual_seed(6))
    objective = build("prompt_alignment")

    def loss(text):
        return value(objective(text_context(soft, [text], emb)))

    base = loss(target_text())
    assert loss(target_text(question=[15, 16, 17, 18])) != pytest.approx(base, rel=1e-3)
    assert loss(target_text(question=[3, 4, 5, 16])) != pytest.approx(base, rel=1e-3)  # one token of it
    assert loss(target_text(answer=[15, 16, 17, 18])) == base
    assert loss(target_text(answer=[15])) == base
    assert loss(target_text(header=[16, 17, 18])) == base


# ---------------------------------------------------------------------------------------------------
# contrastive_prompt
# ---------------------------------------------------------------------------------------------------


def contrastive_by_hand(soft: torch.Tensor, pooled: torch.Tensor, tau: float) -> tuple[float, float]:
    """The two cross-entropies of InfoNCE, soft->question (rows) and question->soft (columns)."""
    s = soft.double().mean(1)
    s = s / s.norm(dim=-1, keepdim=True)
    q = pooled.double() / pooled.double().norm(dim=-1, keepdim=True)
    sim = s @ q.T / tau
    b = sim.shape[0]
    rows = sum(float(torch.logsumexp(sim[i], 0) - sim[i, i]) for i in range(b)) / b
    cols = sum(float(torch.logsumexp(sim[:, j], 0) - sim[j, j]) for j in range(b)) / b
    return rows, cols


@pytest.mark.parametrize("tau", [0.07, 0.5])
@pytest.mark.parametrize("learnable", [False, True])
def test_contrastive_is_the_symmetric_infonce(tau, learnable):
    g = torch.Generator().manual_seed(7)
    soft = torch.randn(3, 2, 4, generator=g)
    pooled = torch.randn(3, 4, generator=g)
    rows, cols = contrastive_by_hand(soft, pooled, tau)
    assert abs(rows - cols) > 0.05  # an asymmetric similarity matrix: the two directions differ
    objective = build("contrastive_prompt", BuildContext(8, 4, 2, batch_size=3), temperature=tau,
                      learnable_temperature=learnable)
    ctx = StepContext(step=1, soft=soft, inputs=inputs_from_labels([[1]] * 3),
                      quantities={"question_pooled": lambda c: pooled})
    loss = objective(ctx)
    assert value(loss) == pytest.approx(0.5 * (rows + cols), rel=1e-5)
    if learnable:
        loss.backward()
        assert objective.log_temperature.grad is not None and float(objective.log_temperature.grad.abs()) > 0
    else:
        assert not any(True for _ in objective.parameters())


def test_contrastive_needs_a_batch_of_two():
    from latentbridge import LatentBridgeError

    message = "objectives.contrastive_prompt needs train.batch_size >= 2 (the batch gives the negatives)"
    with pytest.raises(LatentBridgeError, match=f"^{re.escape(message)}$"):
        build("contrastive_prompt", BuildContext(8, 4, 2, batch_size=1))
    build("contrastive_prompt", BuildContext(8, 4, 2, batch_size=2))


# ---------------------------------------------------------------------------------------------------
# probe_head
# ---------------------------------------------------------------------------------------------------

LABELS = ["a", "b", "c"]


def probe(**options):
    torch.manual_seed(0)
    return build("probe_head", BuildContext(8, 4, 2, labels=LABELS), hidden=5, **options)


def probe_context(soft, pooled, labels) -> StepContext:
    examples = [Example(id=str(i), question="q", answer="a", label=label) for i, label in enumerate(labels)]
    return StepContext(step=1, soft=soft, inputs=inputs_from_labels([[1]] * len(labels)), examples=examples,
                       quantities={"question_pooled": lambda c: pooled})


def probe_data(b=4):
    g = torch.Generator().manual_seed(8)
    return torch.randn(b, 2, 4, generator=g) * 0.1, torch.randn(b, 4, generator=g)


@torch.no_grad()
def probe_by_hand(head, soft, pooled, labels, embedding_weight=1.0, label_weight=1.0) -> float:
    x = soft.double().flatten(1)
    x = x / x.pow(2).mean().sqrt()  # one RMS over the whole batch
    lin = lambda layer, v: v @ layer.weight.double().T + layer.bias.double()  # noqa: E731
    h = F.gelu(lin(head.body[0], x))
    e = lin(head.to_embedding, h)
    p = pooled.double()
    embedding = (1 - (e * p).sum(-1) / (e.norm(dim=-1) * p.norm(dim=-1))).mean()
    known = [(r, LABELS.index(lab)) for r, lab in enumerate(labels) if lab in LABELS]
    if not known:
        return float(embedding_weight * embedding)
    logits = lin(head.to_label, h)
    ce = sum(float(torch.logsumexp(logits[r], 0) - logits[r, i]) for r, i in known) / len(known)
    return float(embedding_weight * embedding) + label_weight * ce


@pytest.mark.parametrize("labels", [["a", "b", "c", "a"], ["c", None, "zzz", "b"], [None, None, "zzz", None],
                                    ["a", "a", "a", "a"], ["a", None, None, None]])  # the first label: index 0
def test_probe_head_matches_the_formula(labels):
    soft, pooled = probe_data()
    head = probe(embedding_weight=0.7, label_weight=1.3)
    loss = head(probe_context(soft, pooled, labels))
    assert value(loss) == pytest.approx(probe_by_hand(head, soft, pooled, labels, 0.7, 1.3), rel=1e-5)


def test_probe_head_depends_on_the_labels():
    soft, pooled = probe_data()
    head = probe()
    labels = ["a", "b", "c", "a"]
    base = value(head(probe_context(soft, pooled, labels)))
    for permuted in (["b", "c", "a", "a"], ["a", "a", "c", "b"]):  # the same labels, other rows
        assert value(head(probe_context(soft, pooled, permuted))) != pytest.approx(base, rel=1e-4)
    off = probe(label_weight=0.0)
    off.load_state_dict(head.state_dict())
    assert value(off(probe_context(soft, pooled, labels))) != pytest.approx(base, rel=1e-4)
    assert value(off(probe_context(soft, pooled, labels))) == pytest.approx(
        probe_by_hand(head, soft, pooled, [None] * 4), rel=1e-5)


def test_probe_head_trains_its_label_head_and_body():
    soft, pooled = probe_data()
    soft.requires_grad_(True)
    head = probe(embedding_weight=0.0)  # the label prediction alone
    head(probe_context(soft, pooled, ["a", "b", "c", "a"])).backward()
    assert head.to_label is not None and head.to_label.weight.shape == (len(LABELS), 5)
    for p in (head.to_label.weight, head.to_label.bias, head.body[0].weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert float(soft.grad.abs().sum()) > 0
    names = {n for n, _ in head.named_parameters()}
    assert {"to_label.weight", "to_label.bias"} <= names


def test_probe_head_without_task_labels_has_no_label_head():
    soft, pooled = probe_data()
    torch.manual_seed(0)
    head = build("probe_head", BuildContext(8, 4, 2), hidden=5)
    assert head.to_label is None
    loss = head(probe_context(soft, pooled, ["a", "b", "c", "a"]))
    assert value(loss) == pytest.approx(probe_by_hand(head, soft, pooled, [None] * 4), rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# dit_flow
# ---------------------------------------------------------------------------------------------------


class RecordingFlow:
    """Stands in for the DiT: records what the objective hands its flow loss."""

    name = "dit"

    def flow_loss(self, h, mask, teacher, seeds):
        self.seen = {"h": h, "mask": mask, "teacher": teacher, "seeds": seeds}
        return teacher.sum() * 0 + 1.25


def test_dit_flow_regresses_toward_the_unit_rms_chunks_of_the_teacher():
    flow = RecordingFlow()
    objective = build("dit_flow", BuildContext(8, 4, 2, translator=flow))
    g = torch.Generator().manual_seed(11)
    embeds = [torch.randn(4, 3, generator=g) * 5, torch.randn(2, 3, generator=g) * 0.1]  # n = 4 and 2, k = 2
    h, mask = torch.randn(2, 5, 8, dtype=torch.float64, generator=g), torch.ones(2, 5, dtype=torch.long)
    seeds = torch.tensor([7, 9])
    ctx = StepContext(step=1, soft=torch.zeros(2, 2, 3), inputs=inputs_from_labels([[1]] * 2),
                      source_hidden=(h, mask), seeds=seeds, translator=flow,
                      quantities={"teacher_embeds": lambda c: embeds})
    assert value(objective(ctx)) == 1.25
    chunks = torch.stack([torch.stack([e[: len(e) // 2].mean(0), e[len(e) // 2 :].mean(0)]) for e in embeds])
    expected = chunks / chunks.pow(2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(flow.seen["teacher"], expected)
    torch.testing.assert_close(flow.seen["teacher"].pow(2).mean(-1), torch.ones(2, 2))  # unit RMS per token
    assert flow.seen["seeds"] is seeds and flow.seen["mask"] is mask
    assert flow.seen["h"].dtype == expected.dtype  # the source's states cast to the teacher's dtype
    torch.testing.assert_close(flow.seen["h"], h.float())


def test_dit_flow_refuses_a_translator_without_a_flow_loss():
    from latentbridge import LatentBridgeError

    message = "objectives.dit_flow needs a translator with a flow loss (dit), not 'linear'"
    with pytest.raises(LatentBridgeError, match=f"^{re.escape(message)}$"):
        build("dit_flow", BuildContext(8, 4, 2, translator=SimpleNamespace(name="linear")))
    build("dit_flow", BuildContext(8, 4, 2, translator=None))  # no translator known yet: nothing to check


# ---------------------------------------------------------------------------------------------------
# devices: the quantities come from the target, the soft tokens from the translator
# ---------------------------------------------------------------------------------------------------

META = torch.device("meta")  # a tensor left on the CPU fails there, without an accelerator


def test_prompt_alignment_moves_the_question_to_the_soft_tokens_device():
    ctx = StepContext(step=1, soft=torch.randn(2, 2, D, device=META), inputs=inputs_from_labels([[1]] * 2),
                      quantities={"question_chunks": lambda c: torch.randn(2, 2, D)})
    for metric in ("cosine", "mse"):
        assert build("prompt_alignment", metric=metric)(ctx).device == META


def test_contrastive_and_probe_run_on_the_soft_tokens_device():
    soft, pooled = probe_data()
    ctx = probe_context(soft.to(META), pooled, ["a", "b", "c", "a"])
    contrastive = build("contrastive_prompt", BuildContext(8, 4, 2, batch_size=4)).to(META)
    assert contrastive(ctx).device == META
    # a probe without labels: its label branch asks a data-dependent question a meta tensor cannot answer
    head = build("probe_head", BuildContext(8, 4, 2), hidden=5).to(META)
    assert head(ctx).device == META


# ---------------------------------------------------------------------------------------------------
# every built-in objective: weights, and what it reads
# ---------------------------------------------------------------------------------------------------


def skip_pending(name):
    if name in PENDING_REDESIGN:
        pytest.skip(f"{name} is being redesigned (tests/test_objective_mutants.py: PENDING_REDESIGN)")


@pytest.mark.parametrize("name", BUILTIN)
def test_compute_does_not_read_its_weight(random_pair, name):
    """An objective returns its unweighted value: built with weight 1 and 3, the same step gives the
    same value, and weighted_loss applies the weight exactly once (the original nll applied it twice)."""
    skip_pending(name)
    exp = experiment(random_pair, name)
    ctx = context(exp, exp.task.examples("train")[:4])
    light = exp.objectives[name]
    heavy = reweighted(light, 3.0)
    assert light.config.weight == 1.0 and heavy.config.weight == 3.0
    term = light(ctx)
    torch.testing.assert_close(heavy(ctx), term, rtol=1e-6, atol=0)
    loss, values, total = weighted_loss(torch.nn.ModuleDict({name: heavy}), ctx, {name: 3.0})
    assert values == {name: pytest.approx(value(term), rel=1e-6)}
    assert value(loss) == pytest.approx(3.0 * value(term), rel=1e-6)
    assert total == pytest.approx(3.0 * value(term), rel=1e-6)


def test_weighted_total_is_the_sum_of_weight_times_term(random_pair):
    """Several terms with scheduled weights (a warm-up, a term scaled with another, a term still off):
    the loss and the logged total are sum(weight * term), each weight once."""
    exp = make_many(random_pair)
    ctx = context(exp, exp.task.examples("train")[:4], step=2)
    configs = {n: o.config for n, o in exp.objectives.items()}
    weights = scheduled_weights(configs, 2)
    assert weights == {"nll": 0.5, "kl": pytest.approx(2.0 * 2 / 4), "prompt_alignment": 3.0 * 0.5,
                       "contrastive_prompt": 0.0}
    terms = {n: float(o(ctx).detach()) for n, o in exp.objectives.items()}
    loss, values, total = weighted_loss(exp.objectives, ctx, weights)
    expected = sum(weights[n] * terms[n] for n in terms)
    assert set(values) == {"nll", "kl", "prompt_alignment"}  # a term with weight 0 is not computed
    assert all(values[n] == pytest.approx(terms[n], rel=1e-6) for n in values)
    assert value(loss) == pytest.approx(expected, rel=1e-6)
    assert total == pytest.approx(expected, rel=1e-6)


def make_many(random_pair):
    from .helpers import make_experiment

    return make_experiment(
        random_pair, "objectives={}", "objectives.nll.weight=0.5", "objectives.kl.weight=2.0",
        "objectives.kl.warmup_steps=4", "objectives.prompt_alignment.weight=3.0",
        "objectives.prompt_alignment.scale_with=nll", "objectives.contrastive_prompt.weight=1.0",
        "objectives.contrastive_prompt.start_step=3", "train.batch_size=4",
    )


def swap(examples, others, field):
    return [dataclasses.replace(e, **{field: getattr(o, field)}) for e, o in zip(examples, others, strict=True)]


@pytest.mark.parametrize("name", BUILTIN)
def test_depends_on_the_question_alone(random_pair, name):
    """The same soft tokens and the same answers, other questions: the loss changes. For the terms that
    read only the question, other answers with the same questions leave it unchanged."""
    skip_pending(name)
    exp = experiment(random_pair, name)
    fixed = exp.translator.rescale(torch.randn(4, exp.translator.k, exp.bridge.target.hidden_size,
                                               generator=torch.Generator().manual_seed(9)))
    exp.bridge.message = lambda prompts, seeds=None, states=None, examples=None: SoftTokens(fixed)
    train = exp.task.examples("train")
    batch, others = train[:4], train[4:8]
    assert all(e.question != o.question and e.answer != o.answer for e, o in zip(batch, others, strict=True))

    def loss(examples):
        return float(exp.objectives[name](context(exp, examples)).detach())

    base = loss(batch)
    assert not math.isclose(loss(swap(batch, others, "question")), base, rel_tol=1e-6)
    if name in QUESTION_ONLY:
        assert loss(swap(batch, others, "answer")) == pytest.approx(base, rel=1e-6, abs=1e-7)


# --------------------------------------------------------------------------------------------------
# rope_phase: the combination of readout and attention mass, and format_penalty: what it generates from
# and what it scores (the survivors of the mutation run over the two redesigned objectives)
# --------------------------------------------------------------------------------------------------


def test_rope_phase_is_its_formula_over_the_captured_attention(random_pair):
    """(1 - cos(readout_s, readout_t)) + mass_weight * (log mass_s - log mass_t)^2, averaged over layers,
    heads and the answer queries: combined here from the module's own pieces (the capture, the message
    attention, the query and question masks, each tested on its own), so this pins the combination."""
    from latentbridge.plugins.objectives.rope_phase import (
        answer_queries,
        message_attention,
        question_positions,
    )

    from latentbridge.nn.keys import capture_attention

    exp = experiment(random_pair, "rope_phase", "objectives.rope_phase.layers=2", "objectives.rope_phase.mass_weight=0.7",
                     "injection=soft_only", "task.shots=1")
    ctx = context(exp, exp.task.examples("train")[:4])
    model, width = exp.bridge.target.model, ctx.get("window")
    teacher_inputs = ctx.get("teacher_inputs")
    queries = answer_queries(ctx.inputs.labels, width)
    with torch.no_grad():
        got = float(exp.objectives["rope_phase"](ctx))
        student, teacher = capture_attention(model, ctx.inputs, 2), capture_attention(model, teacher_inputs, 2)
        per_layer = []
        for s, t in zip(student, teacher, strict=True):
            window = slice(s.query.shape[2] - width, s.query.shape[2])
            s_read, s_mass = message_attention(s, window, ctx.inputs.soft_mask.bool(), ctx.inputs.attention_mask.bool())
            t_read, t_mass = message_attention(t, slice(t.query.shape[2] - width, t.query.shape[2]),
                                               question_positions(ctx, teacher_inputs), teacher_inputs.attention_mask.bool())
            keep = queries[:, None, :].expand_as(s_mass)
            term = (1 - F.cosine_similarity(s_read, t_read, dim=-1)) + 0.7 * (s_mass - t_mass) ** 2
            per_layer.append(float(term[keep].mean()))
    assert got == pytest.approx(sum(per_layer) / 2, rel=1e-5)
    assert per_layer[0] != pytest.approx(per_layer[1], rel=1e-3)  # both layers count, each its own value


def _format_context(pair, monkeypatch, own, **options):
    import latentbridge.plugins.objectives.format_penalty as fp

    from latentbridge.bridge.generation import Generation

    extra = [f"objectives.format_penalty.{k}={v}" for k, v in options.items()]
    exp = experiment(pair, "format_penalty", "objectives.format_penalty.rows=4", *extra)
    ctx = context(exp, exp.task.examples("train")[:4])
    calls = []

    def generate(model, tokenizer, inputs, **kwargs):
        calls.append((inputs, kwargs))
        return [Generation(t, [], "stop") for t in own]

    monkeypatch.setattr(fp, "greedy_generate", generate)
    return exp, ctx, calls


def test_format_penalty_continues_the_bridged_prompt_without_the_answer(random_pair, monkeypatch):
    exp, ctx, calls = _format_context(random_pair, monkeypatch, ["#### 1"] * 4, max_new_tokens=7, stop="['Q:', 'A:']")
    exp.objectives["format_penalty"](ctx)
    (inputs, kwargs), = calls
    prompt = ctx.relayout(ctx.soft.detach(), with_answer=False)
    assert torch.equal(inputs.attention_mask, prompt.attention_mask) and torch.equal(inputs.inputs_embeds, prompt.inputs_embeds)
    assert kwargs == {"max_new_tokens": 7, "eos_ids": exp.bridge.target.eos_ids(), "stop": ["Q:", "A:"]}


def test_format_penalty_is_the_cross_entropy_of_the_format_line_after_the_own_continuation(monkeypatch):
    """On the built-in target, whose tokenizer adds a BOS: the continuation and the format line are
    tokenized without one, trailing whitespace of the continuation dropped; the loss is the mean
    cross-entropy of the format line's tokens (and end of text) read after them, from a plain forward."""
    from latentbridge.plugins.objectives.nll import answer_nll

    from latentbridge.bridge.models import builtin_models

    pair = {"llama": builtin_models()["tiny-llama"], "mistral": builtin_models()["tiny-mistral"]}
    own = ["  She has 5 apples \n", "#### 3", "so it is #### 12", "The answer is 7\n\n"]  # rows 0 and 3 lack one
    exp, ctx, _ = _format_context(pair, monkeypatch, own)
    tok = exp.bridge.target.tokenizer
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # the premise: special tokens would add a BOS
    gold = [e.answer.rsplit("#### ", 1)[1] for e in ctx.examples]
    answers = [((), ())] * 4
    for r in (0, 3):
        answers[r] = (tok(own[r].rstrip(), add_special_tokens=False)["input_ids"],
                      tok(f"\n#### {gold[r]}", add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    inputs = ctx.relayout(ctx.soft, answers=answers)
    rows = torch.tensor([0, 3])
    logits = exp.bridge.target.model(**dataclasses.replace(
        inputs, **{f.name: getattr(inputs, f.name)[rows] for f in dataclasses.fields(inputs)
                   if getattr(inputs, f.name) is not None}).model_kwargs()).logits
    expected = answer_nll(logits, inputs.labels[rows])
    got = exp.objectives["format_penalty"](ctx)
    assert float(got) == pytest.approx(float(expected), rel=1e-5)


def test_format_penalty_without_examples_scores_nothing(random_pair, monkeypatch):
    exp, ctx, _ = _format_context(random_pair, monkeypatch, ["no number"] * 4)
    ctx = dataclasses.replace(ctx, examples=None)
    loss = exp.objectives["format_penalty"](ctx)
    assert float(loss) == 0.0


def test_format_penalty_with_a_tokenizer_without_end_of_text_scores_the_line_alone(random_pair, monkeypatch):
    exp, ctx, _ = _format_context(random_pair, monkeypatch, ["no number here"] * 4)
    tok = exp.bridge.target.tokenizer
    monkeypatch.setattr(type(tok), "eos_token_id", property(lambda self: None), raising=False)
    seen = spy_on_answers(ctx)
    exp.objectives["format_penalty"](ctx)
    gold = ctx.examples[0].answer.rsplit("#### ", 1)[1]
    assert list(seen["answers"][0][1]) == tok(f"\n#### {gold}", add_special_tokens=False)["input_ids"]
