"""Image classification library: CIFAR-10 and scikit-learn digits loaders, and classifiers
(cnn10, resnet20, resnet18, fast). Pure library code: returns data or raises, never prints."""
