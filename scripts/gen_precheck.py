#!/usr/bin/env python3
"""Prints the precheck schema of a Kafka request, read off kafka-protocol's generated decoder.

Usage: scripts/gen_precheck.py join_group_request [more ...]

kafka-protocol generates one `impl Decodable for X` per struct, reading each field as
`let f = if version >= A { types::T.decode(buf)? } else { default };`. This script turns those
reads into `precheck::Field` lists (type and version range), so a new API file can declare the
schema its requests are walked with before the crate decodes them. Developer tool: the output is
pasted into `src/kafka/<api>.rs` and reviewed; nothing builds or runs it.
"""
import glob, os, re, sys

def crate_dir():
    hits = sorted(glob.glob(os.path.expanduser('~/.cargo/registry/src/*/kafka-protocol-0.18.0')))
    if not hits:
        sys.exit('kafka-protocol 0.18.0 is not in ~/.cargo/registry (run a cargo build first)')
    return hits[-1]

SCALAR = {'Int8': 'I8', 'Boolean': 'I8', 'Int16': 'I16', 'UInt16': 'I16', 'Int32': 'I32',
          'Int64': 'I64', 'Float64': 'I64', 'Uuid': 'Uuid', 'String': 'Str', 'CompactString': 'Str',
          'Bytes': 'Bytes', 'CompactBytes': 'Bytes'}
WIDTH = {'Int8': 1, 'Int16': 2, 'Int32': 4, 'Int64': 8, 'Uuid': 16}

def field_types(src, struct):
    m = re.search(r'pub struct %s \{(.*?)\n\}' % struct, src, re.S)
    out = {}
    for name, ty in re.findall(r'pub (\w+): ([^\n]+),', m.group(1)):
        inner = re.search(r'Vec<(\w+)>', ty)
        if inner:
            out[name] = inner.group(1)
    return out

def const_name(struct):
    return re.sub(r'(?<!^)([A-Z])', r'_\1', struct).upper()

def ranges(cond):
    lo, hi = 0, 'ALL'
    for op, n in re.findall(r'version (>=|<=) (\d+)', cond):
        if op == '>=': lo = int(n)
        else: hi = n
    return lo, hi

def parse(src, struct, out, done):
    if struct in done:
        return
    done.add(struct)
    m = re.search(r'impl Decodable for %s \{(.*?)\n\}\n' % struct, src, re.S)
    body = m.group(1)
    flex = re.search(r'if version >= (\d+) \{\s*let num_tagged_fields', body)
    flexible = int(flex.group(1)) if flex else None
    if flexible is None and re.search(r'\n        let num_tagged_fields', body):
        flexible = 0
    vecs = field_types(src, struct)
    fields = []
    # statements: let NAME = ...; at 8-space indent
    for name, expr in re.findall(r'\n        let (\w+) = (.*?);(?=\n        (?:let|Ok|if|\}))', body, re.S):
        if name in ('mut', 'num_tagged_fields'):
            continue
        cond = ''
        mm = re.match(r'if ([^{]*version[^{]*)\{', expr)
        if mm and 'else' in expr and 'types::' not in expr.rsplit('else', 1)[1]:
            cond = mm.group(1)
        lo, hi = ranges(cond)
        toks = re.findall(r'types::(\w+)(?:\((types::\w+)[^)]*\))?', expr)
        kinds = set()
        for t, inner in toks:
            if t in ('Array', 'CompactArray'):
                it = inner.replace('types::', '')
                if it == 'Struct':
                    sub = vecs[name]
                    parse(src, sub, out, done)
                    kinds.add('Ty::Array(%s)' % const_name(sub))
                elif it in ('String', 'CompactString'):
                    kinds.add('Ty::ArrayStr')
                else:
                    kinds.add('Ty::ArrayFixed(%d)' % WIDTH[it])
            elif t in SCALAR:
                kinds.add('Ty::' + SCALAR[t])
            else:
                sys.exit('%s.%s: unknown type %s' % (struct, name, t))
        if not toks:
            continue  # never on the wire in the crate's versions
        if len(kinds) != 1:
            sys.exit('%s.%s: cannot tell the type (%s)' % (struct, name, kinds))
        fields.append('    f(%s, %s, %s), // %s' % (kinds.pop(), lo, hi, name))
    out.append((struct, flexible, fields))

def main():
    base = os.path.join(crate_dir(), 'src', 'messages')
    for mod in sys.argv[1:]:
        src = open(os.path.join(base, mod + '.rs')).read()
        top = re.search(r'impl Decodable for (\w+Request) \{', src).group(1)
        out = []
        parse(src, top, out, set())
        for struct, flexible, fields in out:
            if struct == top:
                print('pub const SCHEMA: Schema = Schema::new(\n    &[\n%s\n    ],\n    %s,\n);' % ('\n'.join(fields), flexible if flexible is not None else 'NEVER'))
            else:
                print('const %s: &[Field] = &[\n%s\n];' % (const_name(struct), '\n'.join(fields)))

main()
