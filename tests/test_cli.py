"""The CLI stays thin and light."""

import subprocess
import sys


def test_help_does_not_import_torch():
    code = ("import sys, contextlib, io\n"
            "from edgefusion.cli.main import main\n"
            "buf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "    for cmd in ('export', 'generate'):\n"
            "        try:\n            main([cmd, '--help'])\n        except SystemExit:\n            pass\n"
            "assert 'usage: edgefusion' in buf.getvalue()\n"
            "assert '--mpq-policy' in buf.getvalue()\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'diffusers', 'numpy') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_console_script_runs():
    res = subprocess.run(["edgefusion", "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "edgefusion" in res.stdout
