"""The model zoo in the seed's shape: QuantizedResnet50, QuantizedResnet152, Densenet121, Vgg16."""
