#!/usr/bin/env python3
"""The PyTorch side of `npm run bench peer`: trains Flock's `net` and `net-batchnorm` with
PyTorch on synthetic in-memory data and prints one JSON line of images/s per model.
With --serve it stays up and measures each model named on a line of stdin, so the benchmark
can pair every PyTorch measurement with a Flock one without paying for `import torch` each time.

Each timed step is a whole SGD step, as Flock's side measures it: zero_grad, forward,
mean cross-entropy over the batch, backward, optimizer step. The models are the ones of
"Deep Learning with PyTorch" ch. 8 with the layers of shared/models/layers.ts (Net; NetBatchNorm
with n_chans1 = 32).

    python3 scripts/torch_bench.py --threads 1 --models net,net-batchnorm --steps 30 --warmup 5
    printf 'net\nnet\n' | python3 scripts/torch_bench.py --threads 2 --serve
"""
import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        out = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        out = F.max_pool2d(torch.tanh(self.conv2(out)), 2)
        out = torch.tanh(self.fc1(out.view(-1, 8 * 8 * 8)))
        return self.fc2(out)


class NetBatchNorm(nn.Module):
    def __init__(self, n_chans1=32):
        super().__init__()
        self.n_chans1 = n_chans1
        self.conv1 = nn.Conv2d(3, n_chans1, kernel_size=3, padding=1)
        self.conv1_batchnorm = nn.BatchNorm2d(n_chans1)
        self.conv2 = nn.Conv2d(n_chans1, n_chans1 // 2, kernel_size=3, padding=1)
        self.conv2_batchnorm = nn.BatchNorm2d(n_chans1 // 2)
        self.fc1 = nn.Linear(8 * 8 * n_chans1 // 2, 32)
        self.fc2 = nn.Linear(32, 2)

    def forward(self, x):
        out = F.max_pool2d(torch.tanh(self.conv1_batchnorm(self.conv1(x))), 2)
        out = F.max_pool2d(torch.tanh(self.conv2_batchnorm(self.conv2(out))), 2)
        out = torch.tanh(self.fc1(out.view(-1, 8 * 8 * self.n_chans1 // 2)))
        return self.fc2(out)


MODELS = {'net': Net, 'net-batchnorm': NetBatchNorm}


def measure(name, batch, steps, warmup, seed):
    """Images/s (wall and per CPU-second of this process) of `steps` SGD steps after `warmup`."""
    torch.manual_seed(seed)
    model = MODELS[name]()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    # A few distinct batches, normalised like the real inputs, cycled through.
    images = [torch.randn(batch, 3, 32, 32) for _ in range(4)]
    labels = [torch.randint(0, 2, (batch,)) for _ in range(4)]

    def step(i):
        optimizer.zero_grad()
        loss = loss_fn(model(images[i % 4]), labels[i % 4])
        loss.backward()
        optimizer.step()
        return loss

    for i in range(warmup):
        step(i)
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    for i in range(steps):
        loss = step(i)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    return {
        'model': name,
        'parameters': sum(p.numel() for p in model.parameters()),
        'threads': torch.get_num_threads(),
        'batch': batch,
        'steps': steps,
        'images_per_sec': batch * steps / wall,
        'images_per_cpu_sec': batch * steps / cpu if cpu > 0 else None,
        'ms_per_step': 1000 * wall / steps,
        'final_loss': float(loss.item()),
        'torch': torch.__version__,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, default=1, help='intra-op (and inter-op) threads')
    parser.add_argument('--models', default='net,net-batchnorm', help='comma-separated: ' + ', '.join(MODELS))
    parser.add_argument('--batch', type=int, default=64)
    parser.add_argument('--steps', type=int, default=30, help='timed steps per model')
    parser.add_argument('--warmup', type=int, default=5, help='untimed steps before them')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--serve', action='store_true', help='measure the models named on stdin, one a line, until EOF')
    args = parser.parse_args()
    names = [m for m in args.models.split(',') if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown or args.threads < 1 or args.batch < 1 or args.steps < 1 or args.warmup < 0:
        parser.error('unknown model(s) %s' % ', '.join(unknown) if unknown else 'threads, batch and steps must be >= 1')
    # Both pools must be sized before any parallel work starts; inter-op threads can only be set once.
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    if args.serve:
        for line in sys.stdin:
            name = line.strip()
            if name not in MODELS:
                print(json.dumps({'error': 'unknown model %r' % name}), flush=True)
                continue
            print(json.dumps(measure(name, args.batch, args.steps, args.warmup, args.seed)), flush=True)
        return
    for name in names:
        print(json.dumps(measure(name, args.batch, args.steps, args.warmup, args.seed)), flush=True)


if __name__ == '__main__':
    sys.exit(main())
