// File-descriptor handles: the native owner of every fd vfio-bridge opens (container, group,
// device). JavaScript sees an opaque, type-tagged external; the fd is closed by close(), by garbage
// collection, or at environment teardown, whichever comes first.
#pragma once

#include <node_api.h>

#include "errors.h"
#include "module.h"

namespace vfio_bridge {

/** class FdResource - one owned fd and the context used in its error messages. */
class FdResource : public Resource {
 public:
  void Release() override;

  int fd = -1;
  ErrorContext where;
};

/** NewHandle - wrap @fd (ownership passes to the handle). Returns nullptr if creation threw. */
napi_value NewHandle(napi_env env, int fd, ErrorContext where);

/**
 * GetHandle - the open FdResource behind @value, or nullptr after throwing: TypeError if @value is
 * not a handle, VfioError (code ECLOSED) if it has been closed.
 */
FdResource* GetHandle(napi_env env, napi_value value, const char* op);

/** ThrowErrno - ThrowVfioError for @op on @handle with the current errno. */
napi_value ThrowErrno(napi_env env, const char* op, const FdResource* handle, int err,
                      const std::string& detail = std::string());

}  // namespace vfio_bridge
