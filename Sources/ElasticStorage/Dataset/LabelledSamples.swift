/// Samples in memory: features row-major (`count × featureCount` float32), one int32 class
/// label per sample. What generation and imports produce, what `Dataset.write` takes and what
/// `Dataset.gather` returns.
public struct LabelledSamples: Sendable, Equatable {
    public var featureCount: Int
    public var classes: Int
    /// Row-major: sample i's features are `features[i·featureCount ..< (i+1)·featureCount]`.
    public var features: [Float]
    public var labels: [Int32]

    public init(featureCount: Int, classes: Int, features: [Float], labels: [Int32]) {
        self.featureCount = featureCount
        self.classes = classes
        self.features = features
        self.labels = labels
    }

    public var count: Int { labels.count }

    public var shape: DatasetShape { DatasetShape(samples: count, features: featureCount, classes: classes) }

    /// The features of sample `index`.
    public func features(of index: Int) -> ArraySlice<Float> {
        features[index * featureCount..<(index + 1) * featureCount]
    }

    /// Checks what a data set needs: at least one sample, at most 2^31−1 (the data order indexes
    /// samples with Int32), arrays of matching lengths, finite features, labels in [0, classes).
    /// `source` names the file or origin in the messages.
    public func validate(source: String = "the samples") throws(DatasetError) {
        guard featureCount >= 1, featureCount <= DatasetLimits.maximumFeatureCount else {
            throw DatasetError(.invalidArgument, "\(source): \(featureCount) features per sample; a data set needs 1 to \(DatasetLimits.maximumFeatureCount)")
        }
        guard classes >= 1, classes <= DatasetLimits.maximumClassCount else {
            throw DatasetError(.invalidArgument, "\(source): \(classes) classes; a data set needs 1 to \(DatasetLimits.maximumClassCount)")
        }
        guard count >= 1 else {
            throw DatasetError(.invalidArgument, "\(source) holds no samples; a data set needs at least one")
        }
        guard count <= Int(Int32.max) else {
            throw DatasetError(.invalidArgument, "\(source) holds \(count) samples, more than the 2^31−1 a data set can index")
        }
        guard features.count == count * featureCount else {
            throw DatasetError(.invalidArgument, "\(source): \(features.count) feature values for \(count) samples of \(featureCount) features (expected \(count * featureCount))")
        }
        try DatasetShape.checkLabels(labels, classes: classes, source: source)
        try Self.checkFinite(features, featureCount: featureCount, source: source)
    }

    static func checkFinite(_ features: UnsafeBufferPointer<Float>, featureCount: Int, firstSample: Int = 0, source: String, path: String? = nil) throws(DatasetError) {
        for i in features.indices where !features[i].isFinite {
            let sample = firstSample + i / featureCount
            throw DatasetError(.nonFiniteFeature, "\(source): feature \(i % featureCount) of sample \(sample) is \(features[i]); features must be finite numbers", path: path)
        }
    }

    static func checkFinite(_ features: [Float], featureCount: Int, source: String) throws(DatasetError) {
        try features.withUnsafeBufferPointer { (buffer) throws(DatasetError) in
            try checkFinite(buffer, featureCount: featureCount, source: source)
        }
    }
}

/// The numbers a training job checks a data set against.
public struct DatasetShape: Sendable, Equatable, Codable, CustomStringConvertible {
    public var samples: Int
    public var features: Int
    public var classes: Int

    public init(samples: Int, features: Int, classes: Int) {
        self.samples = samples
        self.features = features
        self.classes = classes
    }

    public var description: String { "\(samples) samples × \(features) features, \(classes) classes" }
}

/// Progress of a long operation (generate, import, write, open, inspect), for a CLI's progress
/// line. Reported on the calling thread, in order, ending with `completed == total`.
public struct DatasetProgress: Sendable, Equatable {
    public enum Phase: String, Sendable {
        case generating, labelling, reading, parsing, writing, verifying
    }

    public enum Unit: String, Sendable {
        case samples, bytes
    }

    public var phase: Phase
    public var completed: Int
    public var total: Int
    public var unit: Unit

    public init(phase: Phase, completed: Int, total: Int, unit: Unit) {
        self.phase = phase
        self.completed = completed
        self.total = total
        self.unit = unit
    }

    /// 0…1.
    public var fraction: Double { total > 0 ? Double(completed) / Double(total) : 1 }
}

/// Receives progress reports; called on the thread that called the operation.
public typealias DatasetProgressHandler = (DatasetProgress) -> Void

/// Upper bounds on what a file may claim, so that a corrupt or hostile header never makes a
/// reader allocate more than the file holds or more than the operator allows.
public struct DatasetLimits: Sendable, Equatable {
    /// Largest feature count a header or import may claim.
    public static let maximumFeatureCount = 1 << 24
    /// Largest class count a header or import may claim.
    public static let maximumClassCount = 1 << 20
    /// Largest manifest read.
    public static let maximumManifestBytes = 64 << 20

    /// Largest shard file (header + payload) read into memory. Default 16 GiB.
    public var maximumShardBytes: Int = 16 << 30
    /// Largest import file (CSV or `.npy`). Default 64 GiB.
    public var maximumImportBytes: Int = 64 << 30

    public init(maximumShardBytes: Int = 16 << 30, maximumImportBytes: Int = 64 << 30) {
        self.maximumShardBytes = maximumShardBytes
        self.maximumImportBytes = maximumImportBytes
    }
}
