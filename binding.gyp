{
  # fedgate gradient-compression addon. Flags are chosen for byte-identical output with the
  # TypeScript fallback (agent/compress/ts-codec.ts) on x86-64 and ARM64:
  #   -O3                 vectorizes the block loops (baseline SSE2 / NEON only)
  #   -ffp-contract=off   no fused multiply-add: a*b+c must round twice, as in JavaScript
  #   no -ffast-math      it would drop NaN/Inf checks and reassociate the rounding trick
  #   no host-tuned -march/-mtune flag: the binary must run on every CPU of its architecture
  # C++ exceptions: node-addon-api's `node_addon_api_except_all` target turns a thrown
  # Napi::Error *and* any std::exception (std::bad_alloc on a huge tensor) into a JS exception
  # instead of std::terminate under -fno-exceptions.
  'targets': [
    {
      'target_name': 'fedgate_compress',
      'sources': [ 'native/compress.cc', 'native/sdnotify.cc' ],
      'dependencies': [ "<!(node -p \"require('node-addon-api').targets\"):node_addon_api_except_all" ],
      'cflags!': [ '-O2', '-O0' ],
      'cflags_cc!': [ '-O2', '-O0' ],
      'cflags': [ '-O3', '-ffp-contract=off', '-fno-math-errno', '-fvisibility=hidden' ],
      'cflags_cc': [ '-std=gnu++17' ],
      'defines': [ 'NAPI_VERSION=8' ],
      'xcode_settings': {
        'OTHER_CFLAGS': [ '-O3', '-ffp-contract=off', '-fno-math-errno' ],
        'GCC_ENABLE_CPP_EXCEPTIONS': 'YES'
      },
      'msvs_settings': { 'VCCLCompilerTool': { 'ExceptionHandling': 1, 'AdditionalOptions': [ '/fp:strict' ] } }
    }
  ]
}
