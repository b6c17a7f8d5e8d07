"""Train DeepLabV3+ on Cityscapes, PASCAL VOC or your own data (or the synthetic demo set).

    python train_dlv3p.py --backbone resnet50 --output_stride 8
    torchrun --nproc_per_node 4 train_dlv3p.py --backbone resnet50 --output_stride 8

Defaults follow the common ResNet DeepLabV3+ Cityscapes recipe: 80k iterations,
batch 8 (in total, over all processes), 768x768 crops of images scaled by
0.5-2.0, SGD lr 0.01 momentum 0.9 weight decay 5e-4, poly LR (power 0.9) after
a linear warm-up, ImageNet-pretrained backbone, SyncBN on multiple GPUs; the
model predicts the classes of the data set's class table (Cityscapes: 19).
Small data sets want a shorter recipe: docs/own-data.md.

The flags become one frozen RunConfig (deeplabv3plus.config), the run's parts are
built from it (deeplabv3plus.assembly) and a Trainer runs them (deeplabv3plus.trainer).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from deeplabv3plus import assembly, cli
from deeplabv3plus.config import RunConfig, resume_record
from deeplabv3plus.distributed import init_distributed_mode
from deeplabv3plus.run_folder import RunFolder
from deeplabv3plus.tensorboard_log import check_tensorboard, open_training_log
from deeplabv3plus.train_flags import training_parser
from deeplabv3plus.trainer import report_finished
from segdata.flags import ignoring_interrupts, log_to_terminal

log = logging.getLogger("train_dlv3p")


def get_args_parser() -> argparse.ArgumentParser:
    return training_parser("train_dlv3p.py", __doc__.splitlines()[0])


def main(args: argparse.Namespace) -> int:
    log_to_terminal("train_dlv3p")
    context = init_distributed_mode(args.device)
    folder = None
    try:
        checkpoint = assembly.load_resume_point(args.resume) if args.resume else None
        given = cli.given_flags(args, get_args_parser())
        config, changes = RunConfig.from_flags(args, context, checkpoint)
        check_tensorboard(config.tensorboard)
        folder = RunFolder.claim(Path(config.save_dir), config.run_name, args.resume, config.overwrite,
                                 lock=context.is_main)
        parts = assembly.build_parts(config, context, checkpoint, crop_given="crop_size" in given)
    except (FileNotFoundError, ValueError, RuntimeError, KeyboardInterrupt) as error:
        with ignoring_interrupts():
            if folder is not None:
                folder.release()
            return cli.report_error(error)
    try:
        return train(parts, folder, resume_record(given, parts.state.iteration, changes) if args.resume else None)
    finally:
        folder.release()


def train(parts: assembly.RunParts, folder: RunFolder, resume: dict | None) -> int:
    """The run itself, in its claimed folder: record it (``resume``: what this resume changed), fit, report. Any
    stop before the first checkpoint leaves nothing (a second Ctrl-C included); a stop after it leaves last.pth to
    continue from."""
    config, context, state = parts.config, parts.context, parts.state
    assembly.configure_kernels(context.device, config.deterministic)
    training_log = None
    try:
        if context.is_main:
            folder.prepare(replace=config.overwrite and config.is_new_run)
            folder.record({**config.as_record(), "val_protocol": parts.validation_protocol().as_dict(),
                           "class_table": parts.classes.as_dict()}, resume)
            for change in resume["changed"] if resume else []:
                log.info("resumed with a change: %s", change)
            log.info("%s", parts.describe(folder.path))
            training_log = open_training_log(folder.path, config.tensorboard, state.iteration)
        state = parts.trainer(folder.path, training_log).fit()
    except BaseException as error:
        with ignoring_interrupts():
            if training_log is not None:
                training_log.close()
                training_log = None
            if context.is_main and config.is_new_run:
                folder.discard_unstarted()
            if isinstance(error, (FloatingPointError, OSError, ValueError, KeyboardInterrupt)) or (
                    isinstance(error, RuntimeError) and "DataLoader worker" in str(error)):
                return folder.report_stop(error)
            raise
    finally:
        if training_log is not None:
            training_log.close()
        if context.enabled:
            torch.distributed.destroy_process_group()
    if context.is_main and state.history:
        report_finished(state, folder.path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
