# Copyright (c) mmbackbones contributors. Licensed under the Apache License, Version 2.0.
"""Fuzz one reader with mutated copies of a real checkpoint; run in a subprocess by test_fuzz.py.

    python tests/security/fuzz_probe.py {loader|ultralytics} BASE.pth WORK_DIR SEED COUNT SECONDS

Each case is loaded once. The outcome is 'loaded', 'refused' (our error type) or 'other'
(anything else, printed with its type and message). A hang trips faulthandler (exit code 1 with
tracebacks); a crash shows as the process's exit status. The last line is a JSON summary.
"""
import faulthandler
import json
import os
import random
import sys
import time
import zipfile

HANG_SECONDS = 20

#: opcodes torch's weights-only unpickler knows, with argument generators
_OPS = [b'(', b't', b')', b']', b'}', b'N', b'\x88', b'\x89', b'a', b'e', b's', b'u', b'R',
        b'b', b'\x81', b'\x85', b'\x86', b'\x87', b'0', b'2', b'Q', b'.']


def random_pickle(rng: random.Random) -> bytes:
    out = bytearray(b'\x80\x02')
    for _ in range(rng.randint(1, 60)):
        roll = rng.random()
        if roll < 0.15:
            out += b'K' + bytes([rng.randrange(256)])  # BININT1
        elif roll < 0.25:
            text = rng.choice([b'state_dict', b'meta', b'x', b'storage', b'cpu', b'0'])
            out += b'X' + len(text).to_bytes(4, 'little') + text
        elif roll < 0.35:
            module, name = rng.choice([
                ('collections', 'OrderedDict'), ('torch._utils', '_rebuild_tensor_v2'),
                ('mmengine.logging.history_buffer', 'HistoryBuffer'), ('numpy', 'dtype'),
                ('numpy._core.multiarray', '_reconstruct'), ('numpy', 'ndarray'),
                ('numpy._core.multiarray', 'scalar'), ('builtins', 'getattr'),
                ('torch', 'FloatStorage'), ('posix', 'system'), ('builtins', 'set')])
            out += b'c' + module.encode() + b'\n' + name.encode() + b'\n'
        elif roll < 0.45:
            out += rng.choice([b'q', b'h']) + bytes([rng.randrange(8)])  # BINPUT / BINGET
        else:
            out += rng.choice(_OPS)
    return bytes(out + b'.')


def mutate(data: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(['flip', 'flip', 'truncate', 'pickle_flip', 'pickle_random', 'header',
                       'header', 'splice'])
    buf = bytearray(data)
    if kind == 'flip':
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 'truncate':
        buf = buf[:rng.randrange(len(buf))]
    elif kind in ('pickle_flip', 'pickle_random'):
        with zipfile.ZipFile(_bytes_io(data)) as archive:
            name = next(n for n in archive.namelist() if n.endswith('data.pkl'))
            pkl = bytearray(archive.read(name))
        if kind == 'pickle_flip':
            for _ in range(rng.randint(1, 4)):
                pkl[rng.randrange(len(pkl))] = rng.randrange(256)
        else:
            pkl = bytearray(random_pickle(rng))
        buf = bytearray(_replace_record(data, name, bytes(pkl)))
    elif kind == 'header':
        signatures = [b'PK\x03\x04', b'PK\x01\x02', b'PK\x05\x06', b'PK\x06\x06', b'PK\x06\x07']
        spots = [i for sig in signatures for i in _find_all(data, sig)]
        if spots:
            start = rng.choice(spots)
            for _ in range(rng.randint(1, 3)):
                buf[min(len(buf) - 1, start + rng.randrange(46))] = rng.randrange(256)
    else:  # splice: duplicate or drop a random range
        a, b = sorted(rng.randrange(len(buf)) for _ in range(2))
        buf = buf[:a] + buf[b:] if rng.random() < 0.5 else buf[:b] + buf[a:b] + buf[b:]
    return bytes(buf)


def _bytes_io(data):
    import io
    return io.BytesIO(data)


def _find_all(data: bytes, sig: bytes):
    start = data.find(sig)
    while start >= 0:
        yield start
        start = data.find(sig, start + 1)


def _replace_record(data: bytes, name: str, new: bytes) -> bytes:
    out = _bytes_io(b'')
    with zipfile.ZipFile(_bytes_io(data)) as src, zipfile.ZipFile(out, 'w') as dst:
        for info in src.infolist():
            dst.writestr(info.filename, new if info.filename == name else src.read(info.filename))
    return out.getvalue()


def main() -> None:
    loader, base, work_dir, seed, count, seconds = sys.argv[1:7]
    faulthandler.enable()
    import torch  # noqa: F401
    import mmbackbones  # noqa: F401
    from mmbackbones.converters.core import ConversionError
    from mmbackbones.converters.ultralytics_yolov8 import load_ultralytics_checkpoint
    from mmbackbones.engine.checkpoint import CheckpointLoadError, load_checkpoint_weights_only
    if loader == 'loader':
        def read(path):
            return load_checkpoint_weights_only(path, map_location='cpu')
        ours = (CheckpointLoadError, )
    else:
        def read(path):
            return load_ultralytics_checkpoint(path)
        ours = (ConversionError, )
    rng = random.Random(int(seed))
    with open(base, 'rb') as f:
        data = f.read()
    counts = {'loaded': 0, 'refused': 0, 'other': 0}
    deadline = time.monotonic() + float(seconds)
    path = os.path.join(work_dir, 'case.pth')
    done = 0
    while done < int(count) and time.monotonic() < deadline:
        case = mutate(data, rng)
        with open(path, 'wb') as f:
            f.write(case)
        faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
        try:
            read(path)
            counts['loaded'] += 1
        except ours:
            counts['refused'] += 1
        except Exception as exc:  # noqa: BLE001 - the defect this test looks for
            counts['other'] += 1
            keep = os.path.join(work_dir, f'other_{done}.pth')
            with open(keep, 'wb') as f:
                f.write(case)
            print('OTHER', keep, type(exc).__name__, str(exc)[:300].replace('\n', ' '),
                  flush=True)
        finally:
            faulthandler.cancel_dump_traceback_later()
        done += 1
    print(json.dumps(dict(counts, done=done)), flush=True)


if __name__ == '__main__':
    main()
