"""The perturbation library: what each perturbation keeps exactly, what it changes, and seeding."""

import math

import pytest
import torch

from earlyphase.imp import perturb as P


def states(seed=0):
    g = torch.Generator().manual_seed(seed)
    rewind = {"conv.weight": torch.randn(16, 8, 3, 3, generator=g), "fc.weight": torch.randn(10, 64, generator=g),
              "fc.bias": torch.randn(10, generator=g), "bn.running_var": torch.rand(16, generator=g)}
    init = {k: torch.randn(v.shape, generator=g) for k, v in rewind.items()}
    mask = {n: torch.rand(rewind[n].shape, generator=g) > 0.4 for n in ("conv.weight", "fc.weight")}
    rewind["conv.weight"][~mask["conv.weight"]] = 5.0  # pruned entries may hold anything: they must come out 0
    return rewind, init, mask


def run(name, seed=1, noise=1.0):
    rewind, init, mask = states()
    return (
        P.perturb(name, rewind, mask, torch.Generator().manual_seed(seed), init=init, noise=noise),
        rewind,
        init,
        mask,
    )


@pytest.mark.parametrize("name", P.PERTURBATIONS)
def test_mask_and_untouched_tensors_are_kept(name):
    out, rewind, _, mask = run(name)
    assert out.keys() == rewind.keys()
    for n, keep in mask.items():
        assert torch.equal(out[n][~keep], torch.zeros(int((~keep).sum())))
        assert not torch.signbit(out[n][~keep]).any()  # +0, not -0
        assert (out[n][keep] != 0).all()
        assert not torch.equal(out[n][keep], rewind[n][keep])  # it did change the survivors
    for n in ("fc.bias", "bn.running_var"):
        assert torch.equal(out[n], rewind[n])


def test_sign_magnitude_swaps():
    out, rewind, init, mask = run("sign_rewind_mag_init")
    for n, k in mask.items():
        assert torch.equal(torch.sign(out[n][k]), torch.sign(rewind[n][k]))
        assert torch.equal(out[n][k].abs(), init[n][k].abs())
    out, rewind, init, mask = run("sign_init_mag_rewind")
    for n, k in mask.items():
        assert torch.equal(torch.sign(out[n][k]), torch.sign(init[n][k]))
        assert torch.equal(out[n][k].abs(), rewind[n][k].abs())


def test_random_magnitudes_keep_signs_and_follow_kaiming():
    out, rewind, _, mask = run("random_mag")
    for n, k in mask.items():
        assert torch.equal(torch.sign(out[n][k]), torch.sign(rewind[n][k]))
    fan_in = 8 * 3 * 3
    assert P.kaiming_std((16, 8, 3, 3)) == pytest.approx(math.sqrt(2 / fan_in))
    # E[w^2] of |N(0, s^2)| is s^2: within a few standard errors over ~690 draws
    mean_sq = out["conv.weight"][mask["conv.weight"]].pow(2).mean().item()
    assert mean_sq == pytest.approx(2 / fan_in, rel=0.2)


def test_permutations_keep_the_layer_multisets():
    out, rewind, _, mask = run("permute")
    for n, k in mask.items():
        assert torch.equal(out[n][k].sort().values, rewind[n][k].sort().values)  # values move with their signs
        assert not torch.equal(torch.sign(out[n][k]), torch.sign(rewind[n][k]))
    out, rewind, _, mask = run("permute_keep_sign")
    for n, k in mask.items():
        assert torch.equal(torch.sign(out[n][k]), torch.sign(rewind[n][k]))  # every position keeps its sign
        assert torch.equal(out[n][k].abs().sort().values, rewind[n][k].abs().sort().values)


def test_noise_is_scaled_to_each_layer():
    out, rewind, _, mask = run("noise", noise=0.5)
    for n, k in mask.items():
        survivors = rewind[n][k]
        ratio = (out[n][k] - survivors).std() / survivors.std(correction=0)
        assert ratio.item() == pytest.approx(0.5, rel=0.15)
    out, rewind, _, mask = run("noise", noise=0.0)
    for n, k in mask.items():
        assert torch.equal(out[n][k], rewind[n][k])


@pytest.mark.parametrize("name", ["random_mag", "permute", "permute_keep_sign", "noise"])
def test_seeded_draws_repeat_exactly_and_differ_by_seed(name):
    a, b, c = run(name, seed=3)[0], run(name, seed=3)[0], run(name, seed=4)[0]
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_bad_input_is_a_value_error():
    rewind, init, mask = states()
    g = torch.Generator()
    with pytest.raises(ValueError, match="unknown perturbation 'flip'"):
        P.perturb("flip", rewind, mask, g)
    with pytest.raises(ValueError, match="needs the initialisation"):
        P.perturb("sign_rewind_mag_init", rewind, mask, g)
    with pytest.raises(ValueError, match="noise scale"):
        P.perturb("noise", rewind, mask, g, noise=-1.0)
    with pytest.raises(ValueError, match="unknown perturbation 'nois'"):
        P.parse_perturbations(["noise", "nois"])
    assert P.parse_perturbations(["noise", "permute", "noise"]) == ("permute", "noise")
    assert P.parse_perturbations(["all"]) == P.PERTURBATIONS and P.parse_perturbations([]) == ()
