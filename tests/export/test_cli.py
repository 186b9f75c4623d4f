"""dino-export on the command line: a full run, and bad inputs that each give one line."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types

import pytest

from dino_core.errors import UserError
from dino_export import read_metadata, verify
from dino_export.cli import main
from dino_export.config import ExportConfig
from dino_export.pipeline import ExportRequest, run_export


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def assert_one_line_error(code, err: str, *needles: str) -> None:
    assert code not in (0, None)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dino-export: ") and "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_full_run_with_preprocess_and_dynamic_batch(tiny_pretrained, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, err = run_cli([str(tiny_pretrained), "-o", str(out), "--preprocess",
                                 "--dynamic-batch", "1", "2", "4", "--img-size", "160", "224",
                                 "--outputs", "cls,attn", "--outputs", "patch"], capsys)
    assert code == 0, err
    meta = read_metadata(out)
    assert str(meta.batch) == "dynamic:1,2,4" and meta.input_format == "uint8_nhwc_bgr"
    assert list(meta.outputs) == ["cls", "attn", "patch"] and meta.img_size == (160, 224)
    assert "cls max|err|" in stdout and "-> PASS" in stdout


@pytest.mark.parametrize("args, needles", [
    (["--img-size", "150", "224"], ["multiples of the patch size 16", "144 or 160"]),
    (["--precision", "int8"], ["--calib-data"]),
    (["--precision", "fp8"], ["fp8", "fp32", "int8"]),
    (["--trt", "bf16"], ["bf16", "fp16"]),
    (["--outputs", "cls,tokens"], ["tokens", "patch"]),
    (["--opset", "13"], ["--opset 13", "17"]),
    (["--dynamic-batch", "4", "2", "8"], ["MIN <= OPT <= MAX"]),
    (["--calib-data", "/nonexistent/dir", "--precision", "int8"], ["not a directory"]),
    (["--checkpoint-key", "ema"], ["ema"]),
    (["--trt", "int8"], ["--trt int8", "--calib-data"]),
    (["--batch", "2", "--dynamic-batch", "1", "2", "4"], ["exclude each other"]),
    (["--workspace", "2"], ["--workspace does not apply", "(onnx)", "trt-fp16 (--trt fp16)"]),
    (["--calib-count", "8"], ["--calib-count does not apply", "onnx-int8 (--precision int8)"]),
    (["--calib-data", "{tmp}", "--trt", "fp16"], ["--calib-data does not apply",
                                                  "onnx, trt-fp16"]),
    (["--batch", "0"], ["--batch must be >= 1"]),
    (["--opset", "99"], ["--opset 99", "17..23"]),
    (["--verify-data", "/nonexistent/dir"], ["--verify-data", "not a directory"]),
])
def test_bad_options_give_one_line(tiny_training_checkpoint, tmp_path, capsys, args, needles):
    out = tmp_path / "x.onnx"
    args = [a.format(tmp=tmp_path) for a in args]
    code, _, err = run_cli([str(tiny_training_checkpoint), "-o", str(out), *args], capsys)
    assert_one_line_error(code, err, *needles)
    assert code == 2 or "--checkpoint-key" in args, "option mistakes are usage errors (2)"
    assert not out.exists()


def test_bad_checkpoints_give_one_line(tmp_path, capsys):
    code, _, err = run_cli([str(tmp_path / "missing.pth")], capsys)
    assert_one_line_error(code, err, "missing.pth", "no such file")
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    code, _, err = run_cli([str(junk), "-o", str(tmp_path / "j.onnx")], capsys)
    assert_one_line_error(code, err, "junk.pth")


def test_no_tensorrt_writes_and_verifies_onnx_then_fails(tiny_pretrained, tmp_path):
    """Run as a user would (subprocess, the console script's module): a GPU-less machine. The
    fp16 engine's source graph is written and verified too, and the printed trtexec line builds
    from it, strongly typed, with no precision flags."""
    pytest.importorskip("onnxruntime")
    from dino_export.tensorrt import unavailable_reason
    reason = unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present here: the engine build is tested instead")
    out = tmp_path / "m.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "dino_export.cli", str(tiny_pretrained), "-o", str(out),
         "--trt", "fp16", "--dynamic-batch", "1", "4", "8"],
        capture_output=True, text=True, timeout=300)
    assert_one_line_error(proc.returncode, proc.stderr, reason.split(" (")[0],
                          "m.fp16.onnx are written and verified", "build m.fp16.engine",
                          f"trtexec --onnx={tmp_path / 'm.fp16.onnx'}",
                          "--minShapes=images:1x3x224x224", "--maxShapes=images:8x3x224x224")
    assert not any(flag in proc.stderr for flag in ("--fp16", "--int8", ":fp32", "--precision"))
    assert out.is_file() and (tmp_path / "m.fp16.onnx").is_file()
    # both graphs verified, on ONNX Runtime (and on OpenVINO when installed: tests/export/
    # test_verify_engines.py)
    assert proc.stdout.count("onnxruntime (CPUExecutionProvider) vs PyTorch float32") == 2
    assert "fp32 bounds" in proc.stdout and "fp16 bounds" in proc.stdout
    assert "FAIL" not in proc.stdout
    assert not out.with_name("m.fp16.engine").exists()


def test_failed_verification_keeps_the_file_as_unverified(tiny_pretrained, tmp_path, monkeypatch):
    monkeypatch.setitem(verify.TOLERANCES, "fp32", verify.Tolerance(max_abs=1e-12))
    out = tmp_path / "m.onnx"
    with pytest.raises(UserError, match="verification of m.onnx failed.*m.onnx.unverified"):
        run_export(ExportRequest(str(tiny_pretrained), out, ExportConfig()), log=lambda s: None)
    assert not out.exists() and (tmp_path / "m.onnx.unverified").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx.unverified"]


def test_failed_verification_leaves_an_earlier_file_untouched(tiny_pretrained, tmp_path,
                                                             monkeypatch):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the good file from an earlier export")
    monkeypatch.setitem(verify.TOLERANCES, "fp32", verify.Tolerance(max_abs=1e-12))
    with pytest.raises(UserError, match=r"m.onnx.unverified; .*m.onnx is unchanged"):
        run_export(ExportRequest(str(tiny_pretrained), out, ExportConfig()), log=lambda s: None)
    assert out.read_bytes() == b"the good file from an earlier export"


def test_no_verify_skips_the_comparison(tiny_pretrained, tmp_path):
    lines: list[str] = []
    res = run_export(ExportRequest(str(tiny_pretrained), tmp_path / "m.onnx", ExportConfig(),
                                   verify=False), log=lines.append)
    assert res.report is None and res.onnx_path.is_file()
    assert not any("PASS" in line for line in lines)


def test_an_unwritable_output_folder_is_one_line_before_the_export(tiny_pretrained, tmp_path,
                                                                  capsys):
    """Before: a PermissionError traceback after the whole export had run."""
    from tests.limits import unwritable_folder
    folder = unwritable_folder(tmp_path)
    code, out, err = run_cli([str(tiny_pretrained), "-o", str(folder / "m.onnx")], capsys)
    assert_one_line_error(code, err, f"-o {folder / 'm.onnx'}: cannot write in {folder}",
                          "Permission denied")
    assert code == 1 and "loaded" not in out  # refused before the checkpoint was read


def test_an_output_under_a_file_is_one_line(tiny_pretrained, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / "a-file" / "sub" / "m.onnx"
    code, _, err = run_cli([str(tiny_pretrained), "-o", str(out)], capsys)
    assert_one_line_error(code, err, f"{tmp_path / 'a-file'} is not a folder")


# SIGHUP (a closed SSH session) takes the same handler (dino_core.signals.FINALISING_SIGNALS,
# tests/core/test_signals.py); each case here costs ~12 s
@pytest.mark.parametrize("signum, after", [(signal.SIGTERM, "loaded"),    # while exporting
                                           (signal.SIGINT, "exported")])  # while verifying
def test_a_stopping_signal_leaves_no_partial_file(tiny_pretrained, tmp_path, signum, after):
    """docker stop (SIGTERM) or a closed SSH session (SIGHUP) while exporting or verifying:
    exit 128 + signal, one line, the earlier file as it was and nothing else written."""
    out = tmp_path / "m.onnx"
    out.write_bytes(b"the good file from an earlier export")
    for _ in range(3):  # a run that ends before the signal is sent has tested nothing: again
        proc = subprocess.Popen([sys.executable, "-m", "dino_export.cli", str(tiny_pretrained),
                                 "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            if line.startswith(after):
                break
        if proc.poll() is None:
            proc.send_signal(signum)
            break
        proc.communicate()
        out.write_bytes(b"the good file from an earlier export")
    else:
        pytest.fail("dino-export ended three times before the signal could be sent")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, f"exit {proc.returncode}: {err}"
    assert err.strip().splitlines()[-1] == "dino-export: interrupted" and "Traceback" not in err
    assert out.read_bytes() == b"the good file from an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_a_signal_inside_the_exporter_waits_for_it(tiny_pretrained, tmp_path, monkeypatch,
                                                   capsys):
    """CI, 2026-12-01: a SIGTERM that landed while torch's exporter lazily imported
    torch._dynamo left that module half imported; the exporter's own ``except
    torch._dynamo.exc.UserError`` then raised AttributeError, and dino-export ended with a
    TorchExportError traceback (exit 1), or not at all (exit 0). Here the exporter meets the
    signal the same way; the export now finishes its tracing, then stops."""
    import torch
    real_export = torch.onnx.export
    half_imported = types.SimpleNamespace()  # no ``UserError``, like torch._dynamo.exc was

    def exporter_hit_by_a_signal(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the Python handler runs here
        except half_imported.UserError:  # evaluating this raises AttributeError
            pass
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", exporter_hit_by_a_signal)
    out = tmp_path / "m.onnx"
    code, _, err = run_cli([str(tiny_pretrained), "-o", str(out)], capsys)
    assert code == 143 and err.strip() == "dino-export: interrupted", err
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_between_writing_and_verifying_removes_the_file(tiny_pretrained, tmp_path,
                                                                     monkeypatch, capsys):
    """The file is written, then the signal lands before verification starts."""
    from dino_core.signals import Interrupted
    from dino_export import pipeline

    def interrupted(*args, **kwargs):
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(pipeline, "_verified", interrupted)
    code, _, err = run_cli([str(tiny_pretrained), "-o", str(tmp_path / "m.onnx")], capsys)
    assert code == 143 and err.strip() == "dino-export: interrupted"
    assert list(tmp_path.iterdir()) == []
