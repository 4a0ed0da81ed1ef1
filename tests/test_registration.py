"""``custom_imports=['mmbackbones']`` registers everything, also under mmdet's own train script."""
import subprocess
import sys
from pathlib import Path

import mmdet

MMDET_TRAIN = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'


def test_custom_imports_register_backbones_datasets_and_hooks(tiny_config, tool_env):
    """A fresh interpreter that never imports mmbackbones itself: the config does it."""
    script = f'''
from mmengine.config import Config
from mmdet.registry import DATASETS, MODELS
from mmengine.registry import init_default_scope
assert MODELS.get('VoVNet') is None, 'registered before the config was read'
cfg = Config.fromfile({tiny_config!r})
init_default_scope('mmdet')
model = MODELS.build(cfg.model)
print(type(model.backbone).__module__, type(model.backbone).__name__,
      DATASETS.get('DemoShapesDataset').__name__)
'''
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          env=tool_env, cwd='/')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ['mmbackbones.models.backbones.vovnet', 'VoVNet',
                                   'DemoShapesDataset']


def test_mmdet_own_train_script_runs_our_config(tmp_path, tiny_config, tiny_cfg_options, tool_env):
    """mmdet's tools/train.py, untouched, trains a config that only names mmbackbones in
    custom_imports."""
    work_dir = tmp_path / 'mmdet_train'
    proc = subprocess.run(
        [sys.executable, str(MMDET_TRAIN), tiny_config, '--work-dir', str(work_dir),
         '--cfg-options', *tiny_cfg_options, 'train_cfg.max_iters=2',
         'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2'],
        capture_output=True, text=True, env=tool_env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (work_dir / 'iter_2.pth').is_file()
    assert 'coco/bbox_mAP' in proc.stdout + proc.stderr
