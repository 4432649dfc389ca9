{
  "targets": [
    {
      "target_name": "vfio_bridge",
      "sources": [
        "native/module.cc",
        "native/errors.cc",
        "native/fault_guard.cc",
        "native/accessors_x86_64.S",
        "native/handle.cc",
        "native/mapping.cc",
        "native/container.cc",
        "native/group.cc",
        "native/device.cc",
        "native/kvm.cc",
        "native/kvm_slots.cc",
        "native/kvm_vcpu.cc",
        "native/vcpu_thread.cc",
        "native/loop_queue.cc",
        "native/exit_table.cc",
        "native/byte_sink.cc",
        "native/guest_memory.cc",
        "native/dma.cc",
        "native/irq.cc",
        "native/hot_reset.cc",
        "native/iommufd.cc",
        "native/ioas_dma.cc",
        "native/device_cdev.cc",
        "native/migration.cc",
        "native/migration_data.cc",
        "native/async_call.cc",
        "native/symbol_versions.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=9", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags": ["-Wall", "-Wextra", "-O2"],
      "cflags_cc": ["-std=c++20", "-fno-exceptions", "-Wall", "-Wextra", "-O2"],
      "cflags_cc!": ["-fno-rtti"],
      "libraries": ["-Wl,--no-as-needed", "-l:libpthread.so.0", "-l:librt.so.1", "-Wl,--as-needed"]
    }
  ]
}
