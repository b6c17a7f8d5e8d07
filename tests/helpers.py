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
