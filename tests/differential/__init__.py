"""Differential tests: real MTAs (Postfix, Exim, Haraka) against ``mxsandbox serve``, compared
with ``mxsandbox run --profile`` on the same scenario. See FINDINGS.md and README there."""
