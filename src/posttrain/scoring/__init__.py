"""Scoring kernels shared by training and evaluation: log-likelihood choice scoring (``scorer``), task metrics
(``metrics``) and splitting scoring batches over processes (``sharding``). They import nothing above them."""
