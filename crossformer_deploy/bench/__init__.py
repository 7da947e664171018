"""CPU (and GPU) benchmark of every path from a CrossFormer to an answer: PyTorch, ONNX Runtime, OpenVINO.

    config      backends, peers, bars, the records (BenchConfig, Result)
    machine     CPU model and flags, which precisions are native here
    graphs      the model files of one case (exports, target passes, FP16, INT8, NNCF)
    backends    name -> a runnable candidate, or the one-line reason why not
    run         one case: accuracy against PyTorch, interleaved timing, the goal of issue [J]
    profile     time per op type of one backend
    report      table and plot;  recommend: the fastest faithful path per precision and its commands
"""
from crossformer_deploy.bench.config import BACKENDS, OURS, PEERS, BenchConfig, Result, check_backends
from crossformer_deploy.bench.recommend import format_recommendations, recommend
from crossformer_deploy.bench.report import check_plot_available, format_table, plot
from crossformer_deploy.bench.run import goal, run_bench

__all__ = ["BACKENDS", "OURS", "PEERS", "BenchConfig", "Result", "check_backends", "check_plot_available",
           "format_recommendations", "format_table", "goal", "plot", "recommend", "run_bench"]
