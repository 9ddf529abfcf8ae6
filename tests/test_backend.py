import pytest

import minirc
from minirc.backend import get_backend, use_backend


def test_default_is_cpu(monkeypatch):
    monkeypatch.delenv("MINIRC_BACKEND", raising=False)
    assert get_backend() == "cpu"


def test_precedence_argument_context_env(monkeypatch):
    monkeypatch.setenv("MINIRC_BACKEND", "numpy")
    assert get_backend() == "numpy"
    with use_backend("cpu"):
        assert get_backend() == "cpu"
        with use_backend("numpy"):
            assert get_backend() == "numpy"
        assert get_backend("numpy") == "numpy"
        assert get_backend() == "cpu"
    assert get_backend() == "numpy"


def test_unknown_names_are_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="backend: expected one of"):
        get_backend("gpu")
    with pytest.raises(ValueError, match="use_backend"):
        with use_backend("tpu"):
            pass
    monkeypatch.setenv("MINIRC_BACKEND", "fast")
    with pytest.raises(ValueError, match="MINIRC_BACKEND"):
        get_backend()


def test_cuda_without_gpu_is_an_error_not_a_fallback(monkeypatch):
    import minirc.backend as b

    monkeypatch.setattr(b, "cuda_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        get_backend("cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        with use_backend("cuda"):
            pass


def test_simulator_is_available_in_tests():
    assert minirc.cuda_available()
    assert get_backend("cuda") == "cuda"
