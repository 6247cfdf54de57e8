"""A small Keras ResNet for CIFAR-10, trained with a custom ``tf.GradientTape`` loop.

The shape of a Keras ``fit`` script moved to a hand-written loop: a ResNet of 3 stages of
basic residual blocks (He et al., 2016: https://arxiv.org/abs/1512.03385, the CIFAR variant with
n blocks per stage; n=3 is ResNet-20), SGD with momentum, random crop + flip augmentation, and an
evaluation pass on the test set after every epoch. It knows nothing of gpuops or MLflow: it
prints one line per logged step and per evaluation, which the spec's ``metrics:`` patterns read:

    step 40 epoch 1 loss 1.834512 throughput 812.3
    eval step 40 epoch 1 accuracy 0.412000 loss 1.612345

Data (``--dataset``):
* ``cifar10``: ``tf.keras.datasets.cifar10.load_data()`` (downloaded once into ~/.keras/datasets).
* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, no download), split 80/20 with the
  seed; what ``--smoke`` uses, as gpuops's built-in classification smoke does.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def load(dataset: str, seed: int, subset: int, test_subset: int) -> tuple:
    if dataset == "cifar10":
        import tensorflow as tf

        (x, y), (xt, yt) = tf.keras.datasets.cifar10.load_data()
        x, xt = x.astype("float32") / 255.0, xt.astype("float32") / 255.0
        y, yt = y.reshape(-1).astype("int64"), yt.reshape(-1).astype("int64")
    elif dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = (d.images.astype("float32") / 16.0)[..., None]
        order = np.random.RandomState(seed).permutation(len(images))
        cut = int(0.8 * len(images))
        x, y = images[order[:cut]], d.target[order[:cut]].astype("int64")
        xt, yt = images[order[cut:]], d.target[order[cut:]].astype("int64")
    else:
        raise SystemExit(f"unknown --dataset {dataset!r} (cifar10 or digits)")
    if subset:
        keep = np.random.RandomState(seed + 1).permutation(len(x))[:subset]
        x, y = x[keep], y[keep]
    if test_subset:
        xt, yt = xt[:test_subset], yt[:test_subset]
    mean = x.mean(axis=(0, 1, 2), keepdims=True)
    std = x.std(axis=(0, 1, 2), keepdims=True) + 1e-6
    return (x - mean) / std, y, (xt - mean) / std, yt


def resnet(tf, shape: tuple, classes: int, blocks: int, width: int, decay: float):
    layers = tf.keras.layers
    reg = tf.keras.regularizers.l2(decay) if decay else None

    def conv(filters: int, stride: int = 1):
        return layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                             kernel_initializer="he_normal", kernel_regularizer=reg)

    inputs = tf.keras.Input(shape=shape)
    h = layers.ReLU()(layers.BatchNormalization()(conv(width)(inputs)))
    for stage in range(3):
        filters = width * 2 ** stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            r = layers.ReLU()(layers.BatchNormalization()(conv(filters, stride)(h)))
            r = layers.BatchNormalization()(conv(filters)(r))
            if stride != 1 or h.shape[-1] != filters:
                h = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                                              kernel_regularizer=reg)(h))
            h = layers.ReLU()(layers.Add()([h, r]))
    h = layers.GlobalAveragePooling2D()(h)
    return tf.keras.Model(inputs, layers.Dense(classes, kernel_regularizer=reg)(h))


def main(argv: list) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "digits"])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--blocks", type=int, default=3, help="residual blocks per stage (3: ResNet-20)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--subset", type=int, default=0, help="train on N examples (0: all)")
    p.add_argument("--test-subset", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="folder for the trained model (model.keras)")
    a = p.parse_args(argv)

    import tensorflow as tf

    tf.keras.utils.set_random_seed(a.seed)
    x, y, xt, yt = load(a.dataset, a.seed, a.subset, a.test_subset)
    print(f"tensorflow {tf.__version__}; {a.dataset}: {len(x)} train, {len(xt)} test, shape {x.shape[1:]}",
          flush=True)
    model = resnet(tf, x.shape[1:], 10, a.blocks, a.width, a.weight_decay)
    steps_per_epoch = max(1, -(-len(x) // a.batch_size))
    total = a.epochs * steps_per_epoch
    schedule = tf.keras.optimizers.schedules.CosineDecay(a.lr, decay_steps=max(total, 1))
    opt = tf.keras.optimizers.SGD(learning_rate=schedule, momentum=a.momentum, nesterov=True)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    pad = 4 if x.shape[1] >= 32 else 1

    def augment(img, label):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        img = tf.image.resize_with_crop_or_pad(img, h + 2 * pad, w + 2 * pad)
        img = tf.image.random_crop(img, (h, w, c))
        if a.dataset == "cifar10":  # digits are not mirror-symmetric
            img = tf.image.random_flip_left_right(img)
        return img, label

    train = (tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=a.seed)
             .map(augment).batch(a.batch_size))
    test = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(512)

    @tf.function
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits) + tf.add_n(model.losses or [tf.constant(0.0)])
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def eval_step(images, labels):
        logits = model(images, training=False)
        hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=1), labels), tf.float32))
        return hits, loss_fn(labels, logits) * tf.cast(tf.shape(labels)[0], tf.float32)

    step = 0
    for epoch in range(1, a.epochs + 1):
        window, began, seen = [], time.time(), 0
        for images, labels in train:
            window.append(float(train_step(images, labels)))
            seen += int(labels.shape[0])
            step += 1
            if step % a.log_every == 0 or step == total:
                rate = seen / max(time.time() - began, 1e-9)
                print(f"step {step} epoch {epoch} loss {np.mean(window):.6f} throughput {rate:.1f}",
                      flush=True)
                window, began, seen = [], time.time(), 0
        hits, loss_sum = 0.0, 0.0
        for images, labels in test:
            h, s = eval_step(images, labels)
            hits, loss_sum = hits + float(h), loss_sum + float(s)
        print(f"eval step {step} epoch {epoch} accuracy {hits / len(xt):.6f} loss {loss_sum / len(xt):.6f}",
              flush=True)
    if a.out:
        import os

        os.makedirs(a.out, exist_ok=True)
        model.save(os.path.join(a.out, "model.keras"))
        print(f"saved {os.path.join(a.out, 'model.keras')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
