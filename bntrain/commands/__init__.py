"""The command layer: one module per ``bntrain`` command.

Each module holds one function that takes the command's options, calls the
library and returns a result; it prints nothing and never exits (that is
:mod:`bntrain.cli`'s job):

========================  ===============================================
``bntrain fit``           :func:`bntrain.commands.fit.fit_command`
``bntrain check``         :func:`bntrain.commands.check.check_command`
``bntrain eval``          :func:`bntrain.commands.eval.evaluate_command`
``bntrain recompute-stats``  :func:`bntrain.commands.recompute.recompute_stats_command`
``bntrain schema``        :func:`bntrain.commands.schema.schema_command`
``bntrain export``        :func:`bntrain.commands.export.export_command`
``bntrain plot``          :func:`bntrain.commands.plot.plot_command`
``bntrain data list``     :func:`bntrain.commands.data.data_list_command`
``bntrain data fetch``    :func:`bntrain.commands.data.data_fetch_command`
========================  ===============================================

A new command is a new module here (options in, library calls, result out)
plus one click function in :mod:`bntrain.cli` that parses, calls it and
prints.  The modules are imported on demand so that ``bntrain --help`` stays
fast.
"""

__all__: list[str] = []
