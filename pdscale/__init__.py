"""pdscale: a control plane for disaggregated LLM serving.

One import namespace over the project's folders: ``pdscale.controller`` (core, policies, runtime, sources,
admin, lab, cli), ``pdscale.forecasting``, ``pdscale.actuators``, ``pdscale.simulator``. Plugin authors import
from ``pdscale.api`` only.
"""

__version__ = "0.1.0"
