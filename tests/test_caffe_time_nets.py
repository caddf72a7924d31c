"""The `caffe time` nets of the GPU check (benchmarks/caffe_time_nets.py) run here with the CPU caffe, and the
parser reads every loss layer's forward and backward time from its real output."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import caffe_time_nets  # noqa: E402


def test_nets_time_every_loss_layer_on_the_cpu(caffe_bin, tmp_path):
    written = subprocess.run([sys.executable, "-m", "benchmarks.caffe_time_nets", "--out", str(tmp_path),
                              "--hardnet-sizes", "64", "--contrastive-sizes", "256", "--dim", "8"],
                             cwd=REPO, check=True, capture_output=True, text=True).stdout.split()
    assert [Path(p).name for p in written] == ["hardnet_N64.prototxt", "contrastive_N256.prototxt"]
    expected = {"hardnet_N64.prototxt": caffe_time_nets.HARDNET_LAYERS,
                "contrastive_N256.prototxt": caffe_time_nets.CONTRASTIVE_LAYERS}
    for path in written:
        run = subprocess.run([caffe_bin, "time", f"--model={path}", "--iterations=2"], capture_output=True,
                             text=True, env={**os.environ, "GLOG_minloglevel": "0", "GLOG_logtostderr": "1"})
        assert run.returncode == 0, run.stderr[-3000:]
        times = caffe_time_nets.parse_caffe_time(run.stderr)
        for layer in expected[Path(path).name]:
            forward, backward = times[layer]
            assert forward >= 0 and backward >= 0, (layer, times)
