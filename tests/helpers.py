"""Helpers shared by several test modules."""


def interrupt_training_at_epoch(monkeypatch, epoch):
    """Make the given training epoch (1-based) raise KeyboardInterrupt, as a kill or Ctrl-C would; returns a function
    that undoes it."""
    from deeplabv3plus import engine

    real_train_one_epoch = engine.train_one_epoch
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real_train_one_epoch(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", interrupted)
    return lambda: monkeypatch.setattr(engine, "train_one_epoch", real_train_one_epoch)


TINY_RUN = {"output_stride": 16, "pretrained_backbone": "none", "batch_size": 2, "crop_size": (32, 64), "workers": 0,
            "device": "cpu", "warmup_iters": 1, "val_every": 1}
"""The flags of a tiny CPU training run, every test's starting point."""


def run_flags(*extra, **flags) -> list[str]:
    """The flags of :data:`TINY_RUN`, with ``flags`` (flag names with underscores; a tuple for several values; None
    drops a flag; True for a switch) instead of its values, then ``extra`` as written."""
    argv = []
    for key, value in {**TINY_RUN, **flags}.items():
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, *map(str, value if isinstance(value, tuple) else (value,))]
    return [*argv, *map(str, extra)]


def train_command(root, save_dir, *extra, **flags) -> list[str]:
    """train_dlv3p.py's command line of a tiny run on ``root`` into ``save_dir`` (see :func:`run_flags`)."""
    return ["--data-root", str(root), "--save-dir", str(save_dir), *run_flags(*extra, **flags)]


def train_args(root, save_dir, *extra, **flags):
    """:func:`train_command` parsed: the ``args`` of ``train_dlv3p.main``."""
    import train_dlv3p

    return train_dlv3p.get_args_parser().parse_args(train_command(root, save_dir, *extra, **flags))
