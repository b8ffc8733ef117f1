import ElasticNumerics
import ElasticWire

/// A layer's state (spec, optimizer step, named tensors) and its gradient-codec state (extra
/// named tensors) as bytes for a peer-to-peer copy.
/// Decoding checks every count against the bytes and rebuilds the layer through
/// `Layer(state:)`, which checks the shapes, so a bad blob is an error, never a crash.
enum LayerStateCodec {
    static func encode(_ state: LayerState, extras: [NamedTensor] = []) -> [UInt8] {
        var writer = WireWriter(capacity: 64 + state.tensors.reduce(0) { $0 + $1.values.count * 4 + 32 })
        writer.write(UInt32(state.spec.fanIn))
        writer.write(UInt32(state.spec.fanOut))
        writer.write(state.spec.activation.rawValue)
        writer.write(UInt64(state.optimizerStep))
        writer.write(count: state.tensors.count + extras.count)
        for tensor in state.tensors + extras {
            writer.write(tensor.name)
            writer.write(count: tensor.shape.count)
            for dimension in tensor.shape { writer.write(UInt32(dimension)) }
            writer.write(floats: tensor.values)
        }
        // The first `count` tensors are the layer's, the rest its codec state.
        writer.write(count: state.tensors.count)
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8]) throws -> (layer: Layer, extras: [NamedTensor]) {
        var reader = WireReader(bytes)
        let fanIn = Int(try reader.read(UInt32.self))
        let fanOut = Int(try reader.read(UInt32.self))
        let activationName = try reader.readString(limit: 16)
        guard let activation = Activation(rawValue: activationName) else {
            throw WireError(.invalidValue, "unknown activation '\(activationName)' in a layer state")
        }
        let step = try reader.read(UInt64.self)
        guard step <= UInt64(Int.max) else { throw WireError(.invalidValue, "optimizer step \(step) is out of range") }
        let count = try reader.readCount(minimumItemSize: 12)
        var tensors: [NamedTensor] = []
        for _ in 0..<count {
            let name = try reader.readString(limit: 64)
            let dimensions = try reader.readCount(minimumItemSize: 4)
            var shape: [Int] = []
            for _ in 0..<dimensions { shape.append(Int(try reader.read(UInt32.self))) }
            let values = try reader.readFloats()
            guard shape.reduce(1, { $0.multipliedReportingOverflow(by: $1).partialValue }) == values.count else {
                throw WireError(.invalidValue, "tensor \(name) of shape \(shape) holds \(values.count) values")
            }
            tensors.append(NamedTensor(name: name, shape: shape, values: values))
        }
        let own = Int(try reader.read(UInt32.self))
        guard own <= tensors.count else { throw WireError(.invalidValue, "a layer state names \(own) of its \(tensors.count) tensors as its own") }
        try reader.expectEnd()
        let layer = try Layer(state: LayerState(spec: LayerSpec(fanIn: fanIn, fanOut: fanOut, activation: activation), optimizerStep: Int(step), tensors: Array(tensors[..<own])))
        return (layer, Array(tensors[own...]))
    }
}
