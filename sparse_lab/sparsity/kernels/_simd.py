"""Operations on tiles of :data:`LANES` samples for the numba kernels, written as LLVM vector code.

numba compiles a loop of a fixed 16 iterations into 16 scalar operations (LLVM unrolls it before
the loop vectorizer sees it, and numba leaves the SLP vectorizer off), and its arrays cannot be
held in registers across a loop. These intrinsics load, combine and store whole vectors of 16
elements of an array's own dtype; LLVM lowers them to the machine's widest vector instructions
(one AVX-512 register of float32 here, two AVX2 ones elsewhere). Offsets are in elements of a
C-contiguous array, and nothing is bounds-checked: callers keep every vector inside its array.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.extending import intrinsic

LANES = 16
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _vector_type(context, array_type) -> ir.VectorType:  # noqa: ANN001
    return ir.VectorType(context.get_value_type(array_type.dtype), LANES)


def _vector_pointer(context, builder, array_type, array, offset):  # noqa: ANN001, ANN202
    """Pointer to the vector at element ``offset`` of ``array``."""
    data = context.make_array(array_type)(context, builder, array).data
    element = builder.gep(data, [_as_i64(builder, offset)])
    return builder.bitcast(element, _vector_type(context, array_type).as_pointer())


def _as_i64(builder, value):  # noqa: ANN001, ANN202
    return value if value.type.width == 64 else builder.sext(value, _I64)


def _splat(builder, vector_type: ir.VectorType, scalar):  # noqa: ANN001, ANN202
    one = builder.insert_element(ir.Constant(vector_type, ir.Undefined), scalar, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined), ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _llvm_function(builder, name: str, vector_type: ir.VectorType, arity: int):  # noqa: ANN001, ANN202
    suffix = f"v{LANES}f{vector_type.element.intrinsic_name[1:]}"
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(vector_type, [vector_type] * arity), f"llvm.{name}.{suffix}")


def _transpose_masks() -> list[tuple[int, list[int], list[int]]]:
    """Shuffle masks of a 16 x 16 transpose in four stages: stage ``k`` swaps bit ``k`` of the row
    index with bit ``k`` of the column index, one two-source shuffle per output row."""
    stages = []
    for k in range(4):
        bit = 1 << k
        low = [j if not j & bit else LANES + (j ^ bit) for j in range(LANES)]
        high = [j | bit if not j & bit else LANES + j for j in range(LANES)]
        stages.append((bit, low, high))
    return stages


def _transposed_block(context, builder, array_type, array, offset, stride) -> list:  # noqa: ANN001
    """The 16 columns of the 16 x 16 block at ``offset`` (rows ``stride`` apart), as vectors."""
    offset, stride = _as_i64(builder, offset), _as_i64(builder, stride)
    vectors = []
    for t in range(LANES):
        row = builder.add(offset, builder.mul(stride, ir.Constant(_I64, t)))
        vectors.append(builder.load(_vector_pointer(context, builder, array_type, array, row), align=1))
    for bit, low, high in _transpose_masks():
        shuffled = list(vectors)
        for t in range(LANES):
            if not t & bit:
                a, b = vectors[t], vectors[t | bit]
                shuffled[t] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, LANES), low))
                shuffled[t | bit] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, LANES), high))
        vectors = shuffled
    return vectors


@intrinsic
def transpose_block(typingctx, src, src_offset, src_stride, dst, dst_offset, dst_stride):  # noqa: ANN001, ANN201
    """``dst[dst_offset + j * dst_stride + t] = src[src_offset + t * src_stride + j]`` for
    ``t, j < 16``: a 16 x 16 block transposed in registers."""
    if src.dtype != dst.dtype:
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        src_v, src_off, src_ld, dst_v, dst_off, dst_ld = args
        columns = _transposed_block(context, builder, signature.args[0], src_v, src_off, src_ld)
        dst_off, dst_ld = _as_i64(builder, dst_off), _as_i64(builder, dst_ld)
        for j, column in enumerate(columns):
            at = builder.add(dst_off, builder.mul(dst_ld, ir.Constant(_I64, j)))
            builder.store(column, _vector_pointer(context, builder, signature.args[3], dst_v, at), align=1)
        return context.get_dummy_value()

    return types.void(src, src_offset, src_stride, dst, dst_offset, dst_stride), codegen


@intrinsic
def transpose_into(typingctx, src, src_offset, src_stride, dst, rows, rows_offset, dst_stride):  # noqa: ANN001, ANN201
    """``dst[rows[rows_offset + j] * dst_stride + t] = src[src_offset + t * src_stride + j]`` for
    ``t, j < 16``: a 16 x 16 block transposed in registers, each of its columns stored as the row
    of ``dst`` that ``rows`` names."""
    if src.dtype != dst.dtype:
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        src_v, src_off, src_ld, dst_v, rows_v, rows_off, dst_ld = args
        columns = _transposed_block(context, builder, signature.args[0], src_v, src_off, src_ld)
        rows_off, dst_ld = _as_i64(builder, rows_off), _as_i64(builder, dst_ld)
        row_data = context.make_array(signature.args[4])(context, builder, rows_v).data
        for j, column in enumerate(columns):
            row = _as_i64(builder, builder.load(builder.gep(row_data, [builder.add(rows_off, ir.Constant(_I64, j))])))
            pointer = _vector_pointer(context, builder, signature.args[3], dst_v, builder.mul(row, dst_ld))
            builder.store(column, pointer, align=1)
        return context.get_dummy_value()

    return types.void(src, src_offset, src_stride, dst, rows, rows_offset, dst_stride), codegen


@intrinsic
def csr_row_into(typingctx, indices, values, start, stop, src, src_offset, src_stride, dst, dst_offset, init):  # noqa: ANN001, ANN201
    """``dst[dst_offset:dst_offset + 16] = init + sum(values[k] * src[src_offset + indices[k] *
    src_stride:][:16] for k in range(start, stop))``: one CSR row against a tile of 16 samples, the
    sums held in four vector registers (one would wait on the latency of every multiply-add)."""
    if src.dtype != dst.dtype or values.dtype != src.dtype:
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        idx_v, val_v, start_v, stop_v, src_v, src_off, src_ld, dst_v, dst_off, init_v = args
        start_v, stop_v, src_off, src_ld = (_as_i64(builder, v) for v in (start_v, stop_v, src_off, src_ld))
        vector = _vector_type(context, signature.args[4])
        fma = _llvm_function(builder, "fma", vector, 3)
        index_data = context.make_array(signature.args[0])(context, builder, idx_v).data
        value_data = context.make_array(signature.args[1])(context, builder, val_v).data
        sums = [cgutils.alloca_once(builder, vector) for _ in range(4)]
        init_v = context.cast(builder, init_v, signature.args[9], signature.args[4].dtype)
        builder.store(_splat(builder, vector, init_v), sums[0])
        for s in sums[1:]:
            builder.store(ir.Constant(vector, None), s)

        def add_term(k, total):  # noqa: ANN001, ANN202
            column = _as_i64(builder, builder.load(builder.gep(index_data, [k])))
            weight = _splat(builder, vector, builder.load(builder.gep(value_data, [k])))
            at = builder.add(src_off, builder.mul(column, src_ld))
            row = builder.load(_vector_pointer(context, builder, signature.args[4], src_v, at), align=1)
            builder.store(builder.call(fma, [weight, row, builder.load(total)]), total)

        count = builder.sub(stop_v, start_v)
        groups = builder.sdiv(count, ir.Constant(_I64, 4))
        with cgutils.for_range(builder, groups) as loop:
            first = builder.add(start_v, builder.mul(loop.index, ir.Constant(_I64, 4)))
            for u, total in enumerate(sums):
                add_term(builder.add(first, ir.Constant(_I64, u)), total)
        rest = builder.add(start_v, builder.mul(groups, ir.Constant(_I64, 4)))
        with cgutils.for_range(builder, builder.sub(stop_v, rest)) as loop:
            add_term(builder.add(rest, loop.index), sums[0])
        loaded = [builder.load(s) for s in sums]
        result = builder.fadd(builder.fadd(loaded[0], loaded[1]), builder.fadd(loaded[2], loaded[3]))
        builder.store(result, _vector_pointer(context, builder, signature.args[7], dst_v, dst_off), align=1)
        return context.get_dummy_value()

    return types.void(indices, values, start, stop, src, src_offset, src_stride, dst, dst_offset, init), codegen


@intrinsic
def dot_vectors(typingctx, a, a_offset, b, b_offset, count):  # noqa: ANN001, ANN201
    """``sum(a[a_offset:a_offset + 16 * count] * b[b_offset:b_offset + 16 * count])``, in two vector
    registers and one final sum across lanes."""
    if a.dtype != b.dtype:
        return None

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        a_v, a_off, b_v, b_off, count_v = args
        a_off, b_off, count_v = (_as_i64(builder, v) for v in (a_off, b_off, count_v))
        vector = _vector_type(context, signature.args[0])
        fma = _llvm_function(builder, "fma", vector, 3)
        sums = [cgutils.alloca_once(builder, vector) for _ in range(2)]
        for total in sums:
            builder.store(ir.Constant(vector, None), total)

        def add_term(v, total):  # noqa: ANN001, ANN202
            step = builder.mul(v, ir.Constant(_I64, LANES))
            x = builder.load(_vector_pointer(context, builder, signature.args[0], a_v, builder.add(a_off, step)), align=1)
            y = builder.load(_vector_pointer(context, builder, signature.args[2], b_v, builder.add(b_off, step)), align=1)
            builder.store(builder.call(fma, [x, y, builder.load(total)]), total)

        pairs = builder.sdiv(count_v, ir.Constant(_I64, 2))
        with cgutils.for_range(builder, pairs) as loop:
            first = builder.mul(loop.index, ir.Constant(_I64, 2))
            add_term(first, sums[0])
            add_term(builder.add(first, ir.Constant(_I64, 1)), sums[1])
        with builder.if_then(builder.icmp_signed("!=", builder.mul(pairs, ir.Constant(_I64, 2)), count_v)):
            add_term(builder.sub(count_v, ir.Constant(_I64, 1)), sums[0])
        total = builder.fadd(builder.load(sums[0]), builder.load(sums[1]))
        width = LANES
        while width > 1:  # pairwise across lanes
            width //= 2
            upper = builder.shuffle_vector(total, ir.Constant(vector, ir.Undefined),
                                           ir.Constant(ir.VectorType(_I32, LANES), [width + i if i < width else i for i in range(LANES)]))
            total = builder.fadd(total, upper)
        return builder.extract_element(total, ir.Constant(_I32, 0))

    return a.dtype(a, a_offset, b, b_offset, count), codegen


@intrinsic
def relu_inplace(typingctx, array, offset):  # noqa: ANN001, ANN201
    """``array[offset:offset + 16] = relu(array[offset:offset + 16])`` (NaN stays NaN, as torch's)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vector = _vector_type(context, signature.args[0])
        pointer = _vector_pointer(context, builder, signature.args[0], args[0], args[1])
        value = builder.load(pointer, align=1)
        zero = ir.Constant(vector, None)
        builder.store(builder.select(builder.fcmp_ordered("<", value, zero), zero, value), pointer, align=1)
        return context.get_dummy_value()

    return types.void(array, offset), codegen
