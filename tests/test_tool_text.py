"""Usage text of tools/ names files that exist and the script itself."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tool_texts():
    for path in sorted(glob.glob(os.path.join(ROOT, 'tools', '*'))):
        if path.endswith(('.py', '.sh')):
            with open(path, encoding='utf-8') as f:
                yield os.path.basename(path), f.read()


def test_configs_named_in_tools_exist():
    """tools/train.py's docstring named configs/resnet18_cifar100_... ."""
    named = {(tool, m) for tool, text in _tool_texts()
             for m in re.findall(r'configs/[\w./-]+\.py', text)}
    assert named, 'no config named in tools/: the check checks nothing'
    missing = [(t, m) for t, m in named
               if not os.path.isfile(os.path.join(ROOT, m))]
    assert not missing


def test_shell_usage_names_its_own_script():
    """tools/dist_test.sh's usage said dist_train.sh."""
    for tool, text in _tool_texts():
        if tool.endswith('.sh'):
            usage = [ln for ln in text.splitlines()
                     if ln.startswith('#') and 'bash tools/' in ln]
            assert all(f'tools/{tool}' in ln for ln in usage), (tool, usage)
