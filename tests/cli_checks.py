"""Helpers shared by the tests of bad input and faults: run the CLI in-process, check its one-line error."""

import torch

from earlyphase.studies import cli


def run_cli(args, capsys):
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code, stderr, *words):
    """The error is one line, the last on stderr (imp prints its progress there before it); returns it."""
    assert code == 2, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("earlyphase: error: ") and stderr.count("earlyphase: error") == 1, stderr
    assert "Traceback" not in stderr and all(w in line for w in words), line
    return line


def final_weights(path):
    return torch.load(path, weights_only=True)["model"]


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
