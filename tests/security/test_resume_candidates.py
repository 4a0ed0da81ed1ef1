# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""A resume candidate is complete only if its zip end record ends exactly at the end of the file
and its central directory sits right before it (zip64 included)."""
import io
import zipfile

import pytest
import torch

import mmbackbones  # noqa: F401
from mmbackbones.engine.checkpoint import (CorruptCheckpointError, check_checkpoint_file,
                                           find_latest_valid_checkpoint, is_valid_checkpoint,
                                           load_checkpoint_weights_only)


def checkpoint_with_embedded_zip(tmp_path):
    """A checkpoint whose data holds another complete checkpoint (as bytes in a tensor), cut right
    after the embedded one: what a kill mid-save can leave, and what zipfile alone accepts."""
    inner = io.BytesIO()
    torch.save({'state_dict': {'w': torch.ones(3)}}, inner)
    payload = torch.frombuffer(bytearray(inner.getvalue()), dtype=torch.uint8)
    outer = tmp_path / 'full.pth'
    torch.save({'state_dict': {'w': torch.zeros(3)}, 'blob': payload.clone()}, outer)
    data = outer.read_bytes()
    end = data.index(inner.getvalue()) + len(inner.getvalue())
    cut = tmp_path / 'iter_6.pth'
    cut.write_bytes(data[:end])
    return outer, cut


def test_cut_after_an_embedded_zip_is_not_a_valid_candidate(tmp_path):
    full, cut = checkpoint_with_embedded_zip(tmp_path)
    # what made the old check accept it: zipfile finds the embedded end record
    with zipfile.ZipFile(cut) as archive:
        assert any(n.endswith('/data.pkl') for n in archive.namelist())
    assert is_valid_checkpoint(full)
    assert not is_valid_checkpoint(cut)
    with pytest.raises(CorruptCheckpointError, match='not one complete archive|zip64 end'):
        check_checkpoint_file(cut)
    with pytest.raises(CorruptCheckpointError):
        load_checkpoint_weights_only(cut)

    work_dir = tmp_path / 'wd'
    work_dir.mkdir()
    (work_dir / 'iter_4.pth').write_bytes(full.read_bytes())
    (work_dir / 'iter_6.pth').write_bytes(cut.read_bytes())
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_6.pth'))
    assert find_latest_valid_checkpoint(work_dir, logger=None) == str(work_dir / 'iter_4.pth')


def test_trailing_bytes_and_cut_end_records_are_refused(tmp_path):
    good = tmp_path / 'good.pth'
    torch.save({'w': torch.arange(4.)}, good)
    data = good.read_bytes()
    for name, bad in (('trailing', data + b'\0' * 10), ('cut_eocd', data[:-5]),
                      ('comment_short', data[:-2] + b'\x05\x00')):
        path = tmp_path / f'{name}.pth'
        path.write_bytes(bad)
        assert not is_valid_checkpoint(path), name


def test_zip_comment_that_reaches_the_end_is_accepted(tmp_path):
    path = tmp_path / 'commented.pth'
    torch.save({'w': torch.arange(4.)}, path)
    with zipfile.ZipFile(path, 'a') as archive:
        archive.comment = b'made by a tool'
    assert is_valid_checkpoint(path)
    assert torch.equal(load_checkpoint_weights_only(path)['w'], torch.arange(4.))


def test_zip64_end_records(tmp_path, monkeypatch):
    """A zip64 archive (as miniz writes beyond 65,535 records or 4 GiB) is checked through its
    zip64 end record and locator."""
    src = tmp_path / 'src.pth'
    torch.save({'w': torch.arange(4.)}, src)
    path = tmp_path / 'zip64.pth'
    monkeypatch.setattr(zipfile, 'ZIP_FILECOUNT_LIMIT', 1)  # force zip64 end records
    with zipfile.ZipFile(src) as a, zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as b:
        for info in a.infolist():
            b.writestr(info.filename, a.read(info.filename))
    monkeypatch.undo()
    assert b'PK\x06\x06' in path.read_bytes()[-200:]
    assert is_valid_checkpoint(path)
    assert torch.equal(load_checkpoint_weights_only(path)['w'], torch.arange(4.))
    data = path.read_bytes()
    z64 = data.rindex(b'PK\x06\x06')
    broken = tmp_path / 'zip64_broken.pth'
    broken.write_bytes(data[:z64 + 48] + bytes([data[z64 + 48] ^ 0x40]) + data[z64 + 49:])  # cd offset
    assert not is_valid_checkpoint(broken)
