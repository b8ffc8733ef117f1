/// Checks the training runtime makes before step 0, so that a data set that does not fit the
/// job is refused with a sentence instead of failing inside a matmul.
extension DatasetShape {
    /// Refuses a data set the model cannot train on:
    /// - the feature count must equal the model's input width;
    /// - the model needs at least as many outputs as the data set has classes (more is allowed:
    ///   the extra logits are never a target);
    /// - the global batch must be between 1 and the number of samples.
    /// `name` is how messages call the data set (its directory, say).
    public func checkFits(modelInputs: Int, modelOutputs: Int, globalBatch: Int, name: String = "the data set") throws(DatasetError) {
        guard features == modelInputs else {
            throw DatasetError(.featureCountMismatch, "\(name) has \(features) features, the model's first layer expects \(modelInputs): use a data set with \(modelInputs) features, or set the model's inputs to \(features)")
        }
        guard classes <= modelOutputs else {
            throw DatasetError(.classCountMismatch, "\(name) has \(classes) classes (labels 0…\(classes - 1)), the model's last layer has only \(modelOutputs) outputs: give the last layer at least \(classes) outputs")
        }
        guard globalBatch >= 1 else {
            throw DatasetError(.batchTooLarge, "the global batch is \(globalBatch); it must be at least 1")
        }
        guard globalBatch <= samples else {
            throw DatasetError(.batchTooLarge, "the global batch of \(globalBatch) is larger than \(name)'s \(samples) samples: use a batch of at most \(samples)")
        }
    }

    /// Steps in one epoch with global batch `batch`: ⌊samples / batch⌋, as in the W1 reference.
    public func stepsPerEpoch(batch: Int) -> Int { batch > 0 ? samples / batch : 0 }

    /// Samples of each epoch's order that no step consumes (the last `samples mod batch`
    /// positions of the permutation), so that the runtime can log them.
    public func samplesDroppedPerEpoch(batch: Int) -> Int { batch > 0 ? samples % batch : samples }

    /// Refuses a label outside [0, classes), naming the first offending sample.
    public static func checkLabels(_ labels: [Int32], classes: Int, firstSample: Int = 0, source: String = "the labels", path: String? = nil) throws(DatasetError) {
        try labels.withUnsafeBufferPointer { (buffer) throws(DatasetError) in
            try checkLabels(buffer, classes: classes, firstSample: firstSample, source: source, path: path)
        }
    }

    static func checkLabels(_ labels: UnsafeBufferPointer<Int32>, classes: Int, firstSample: Int = 0, source: String, path: String? = nil) throws(DatasetError) {
        for i in labels.indices where labels[i] < 0 || Int(labels[i]) >= classes {
            throw DatasetError(.labelOutOfRange, "\(source): sample \(firstSample + i) has label \(labels[i]), outside 0…\(classes - 1) for \(classes) classes", path: path)
        }
    }
}
