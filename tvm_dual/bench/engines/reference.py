"""The engines a user has without compiling anything: numpy (BLAS) and PyTorch eager."""

from __future__ import annotations

from .base import Engine, EngineSkipped, LoadContext, PrepareContext, Runner, Variant, to_numpy_leaves


class NumpyEngine(Engine):
    """The workload's own numpy implementation (BLAS gemv for a layer), where it has one. It is
    pickled with its weights by value, so that the measuring process imports neither torch nor tvm."""

    name = "numpy"
    label = "numpy (BLAS)"
    modules = ("numpy", "cloudpickle")

    def prepare(self, context: PrepareContext) -> list[Variant]:
        import cloudpickle

        if context.workload.numpy_forward is None:
            raise EngineSkipped(f"workload {context.workload.name!r} has no numpy implementation")
        context.artifact(self.name, "forward.pkl").write_bytes(cloudpickle.dumps(context.workload.numpy_forward))
        return [Variant(artifact="forward.pkl")]

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        import pickle

        forward = pickle.loads(context.artifact(self.name, variant.artifact).read_bytes())
        return Runner(call=lambda inputs: forward(*inputs))


class TorchEngine(Engine):
    """PyTorch eager in inference mode. oneDNN follows the workload's torch_mkldnn (off for RNN steps,
    where mkldnn_rnn_layer is 10x slower at one step; see docs/PEERS.md)."""

    name = "torch"
    label = "PyTorch eager"
    modules = ("torch",)

    def load(self, context: LoadContext, variant: Variant, threads: int) -> Runner:
        import torch

        workload = context.workload()
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = workload.torch_mkldnn
        model = workload.model.eval()
        mode = torch.inference_mode()
        mode.__enter__()  # for the life of this worker process: timed calls skip autograd bookkeeping

        def native(inputs):
            return tuple(torch.from_numpy(a) for a in inputs)

        return Runner(call=lambda inputs: model(*inputs), native=native, outputs=to_numpy_leaves)
