"""Conformance suites shipped with lmalloc: test a new implementation of an interface by
adding one fixture line (see :mod:`lmalloc.testing.samplers`)."""
