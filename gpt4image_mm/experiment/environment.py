"""What a run's numbers depend on beyond its config, recorded with every
report so two reports can be compared (docs/experiment.md: the runs are
bitwise reproducible only on the same CPU kind, threads and versions)."""
from __future__ import annotations

import os
import platform
from typing import Any, Dict, List

# CPU features that select different math kernels in oneDNN / MKL / ATen.
KERNEL_FLAGS = ('sse4_2', 'avx', 'avx2', 'fma', 'avx512f', 'avx512_vnni',
                'avx512_bf16', 'amx_tile', 'amx_bf16', 'asimd', 'sve')


def _cpuinfo() -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('model name', 'flags', 'Features') and \
                        key not in out:
                    out[key] = value.strip()
    except OSError:
        pass
    return out


def environment(threads: int) -> Dict[str, Any]:
    """CPU model and kernel flags, library versions, threads, device."""
    import mmengine
    import mmpretrain
    import numpy
    import torch
    info = _cpuinfo()
    flags = set((info.get('flags') or info.get('Features') or '').split())
    device = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
              else 'cpu')
    return {
        'cpu': info.get('model name') or platform.processor() or 'unknown',
        'cpu kernel flags': ' '.join(f for f in KERNEL_FLAGS if f in flags)
        or 'unknown',
        'torch CPU capability': torch.backends.cpu.get_cpu_capability(),
        'threads per run': threads,
        'device': device,
        'python': platform.python_version(),
        'torch': torch.__version__,
        'mmengine': mmengine.__version__,
        'mmpretrain': mmpretrain.__version__,
        'numpy': numpy.__version__,
        'os': f'{platform.system()} {platform.release()}',
        'DNNL_MAX_CPU_ISA': os.environ.get('DNNL_MAX_CPU_ISA', '(unset)'),
        'ATEN_CPU_CAPABILITY': os.environ.get('ATEN_CPU_CAPABILITY',
                                              '(unset)'),
    }


def environment_lines(env: Dict[str, Any]) -> List[str]:
    return ['| environment | |', '| --- | --- |'] + [
        f'| {k} | {v} |' for k, v in env.items()]
